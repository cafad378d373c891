"""The FIPS mode end to end on the Debian stand-in: Debian's cloud kernel has CONFIG_CRYPTO_FIPS, so
fips=1 on its command line (the FIPS mode playbook's Debian branch) turns the kernel's FIPS mode on."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ours
from vagabond.vm.workdir import domain_prefix

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_debian12_fips_comes_up_in_fips_mode_and_says_so(vagabond):
    result = vagabond("up", "debian12-fips", timeout=3600)
    try:
        assert "TASK [Put fips=1 on the kernel command line (Debian)]" in result.stderr
        assert "fips on default: 1" in result.stderr, "up prints the FIPS check"
        assert vagabond("run", "debian12-fips", "--", "cat", "/proc/sys/crypto/fips_enabled").stdout == "1\n"
        assert "fips=1" in vagabond("run", "debian12-fips", "--", "cat", "/proc/cmdline").stdout
        again = vagabond("provision", "debian12-fips")
        assert "changed=0" in again.stdout and "failed=0" in again.stdout
    finally:
        prefix = domain_prefix("debian12-fips", vagabond.cwd / ".vagabond" / "debian12-fips")
        vagabond("destroy", "debian12-fips")
    assert ours(prefix)["domains"] == []
