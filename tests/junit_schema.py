"""The JUnit XML schema CI systems validate against (Jenkins xunit's junit-10.xsd), taken from the
pytest source distribution on PyPI (pytest validates its own reports with it), cached outside the
repository. Downloaded in the root network namespace: PyPI is a package registry."""

from __future__ import annotations

import subprocess
import sys
import tarfile

import pytest

from tests.conftest import MISSING
from vagabond import paths

XSD = "junit-10.xsd"


def junit_schema():
    try:
        import xmlschema
    except ImportError:
        pytest.skip(f"{MISSING}: xmlschema (pip install -e '.[test]')")
    cache = paths.cache_dir() / "junit-schema"
    xsd = cache / XSD
    if not xsd.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                "pytest",
                "pytest",
                "--dest",
                str(cache),
            ],
            check=True,
            timeout=600,
        )
        (sdist,) = cache.glob("pytest-*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(f"/testing/example_scripts/{XSD}"))
            xsd.write_bytes(archive.extractfile(member).read())
    return xmlschema.XMLSchema(str(xsd))
