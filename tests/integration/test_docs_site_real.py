"""The documentation site as a reader sees it: built with MkDocs, served on 127.0.0.1, opened in
headless Chromium (Debian's package), its home page and a reference page screenshotted and their
rendered DOM read. Server and browser run in a network namespace of their own that has only a
loopback device, so nothing the page (or the browser) asks for can leave the machine.

VAGABOND_SCREENSHOTS=DIR keeps the screenshots there for a person to look at.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.real

WIDTH, HEIGHT = 1280, 900
PAGES = {"home": "", "commands": "reference/commands/"}

# Runs inside `unshare --net`: brings up loopback, serves the site, drives the browser.
INNER = r"""
import functools, http.server, subprocess, sys, threading
site, out, width, height = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
pages = dict(arg.split("=", 1) for arg in sys.argv[5:])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=site)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_address[1]}/"
browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           f"--user-data-dir={out}/profile", f"--window-size={width},{height}"]
for name, path in pages.items():
    subprocess.run([*browser, f"--screenshot={out}/{name}.png", base + path], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([*browser, "--dump-dom", base + path], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    open(f"{out}/{name}.html", "w").write(dom)
server.shutdown()
"""


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (enough to see it is not blank)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    require_tool("chromium", "unshare", "ip")
    site = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    out = Path(os.environ.get("VAGABOND_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    pages = [f"{name}={path}" for name, path in PAGES.items()]
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", INNER, str(site), str(out), str(WIDTH), str(HEIGHT), *pages],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("page", PAGES)
def test_the_page_renders_as_a_full_readable_screen(shots, page):
    width, height, pixels = png_pixels(shots / f"{page}.png")
    assert (width, height) == (WIDTH, HEIGHT)
    # A blank or unstyled page is a few colours; a rendered one (header bar, navigation, text,
    # code blocks) many, and its header row differs from its body.
    assert len(set(pixels)) > 64, f"{page}: the screenshot is nearly one colour"
    row = len(pixels) // height
    assert pixels[row * 10 : row * 11] != pixels[row * 600 : row * 601], f"{page}: no header bar"


def test_the_home_page_shows_the_navigation_and_the_theme(shots):
    dom = (shots / "home.html").read_text()
    assert "md-header" in dom and "md-nav" in dom, "Material's header and navigation are missing"
    for section in ("Getting started", "How-to guides", "Reference", "Explanation", "Benchmarks"):
        assert section in dom, f"the navigation lacks {section}"
    assert "assets/stylesheets/main" in dom


def test_the_reference_page_lists_the_commands(shots):
    dom = (shots / "commands.html").read_text()
    for command in ("vagabond up", "vagabond run", "vagabond publish", "vagabond pull"):
        assert command in dom, f"the commands reference lacks {command}"
