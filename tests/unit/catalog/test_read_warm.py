"""The warm images a metadata catalog lists for a version, as `up` reads them: only well-formed
entries, only http(s) or files inside the catalog's own directory (no link out of it), and a
download is kept only when it has the sha256 the catalog names."""

from __future__ import annotations

import json
import os

import pytest

from tests.unit.catalog.test_transaction import NAME, catalog_doc, make_box
from tests.unit.catalog.test_transaction_warm import DIGEST, KEY, accept, with_warm
from vagabond import files
from vagabond.catalog import catalogs
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.read import Published, WarmOffer
from vagabond.errors import PublishError


@pytest.fixture
def published(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    cat = tmp_path / "cat"
    box = make_box(tmp_path, "1.0.0")
    warm = with_warm(box)
    catalogs.publish(box, str(cat), check_warm=accept)
    url = (cat / "metadata.json").as_uri()
    return cat, url, warm


def test_a_listed_warm_image_is_offered_and_downloaded_checked(published):
    cat, url, warm = published
    catalog = open_catalog(url)
    offers, why = catalog.warm_offers(Published(NAME, "1.0.0", url))
    assert why == "" and [(o.key, o.sha256, o.size) for o in offers] == [
        (KEY, files.sha256_file(warm), warm.stat().st_size)
    ]
    got = catalog.download_warm(offers[0])
    assert got.read_bytes() == warm.read_bytes() and got.stat().st_mode & 0o777 == 0o600
    got.unlink()
    (cat / f"1.0.0/org-tiny-1.0.0-warm-{DIGEST}.tar").write_bytes(b"changed in the catalog")
    with pytest.raises(PublishError, match="does not match its sha256"):
        catalog.download_warm(offers[0])
    assert list(got.parent.iterdir()) == [], "nothing of it kept"
    assert catalog.warm_offers(Published(NAME, "9.9", url)) == ([], f"{url} no longer lists {NAME} 9.9")


def test_entries_that_name_a_file_outside_the_catalog_or_are_malformed_are_not_offered(published, tmp_path):
    cat, url, warm = published
    secret = tmp_path / "secret"
    secret.write_text("root's")
    os.symlink(secret, cat / "1.0.0" / "link.tar")
    doc = catalog_doc(cat)
    good = doc["versions"][0]["vagabond"]["warm"][0]
    doc["versions"][0]["vagabond"]["warm"] = [
        good | {"url": secret.as_uri(), "checksum": files.sha256_file(secret)},
        good | {"url": (cat / "1.0.0" / "link.tar").as_uri(), "checksum": files.sha256_file(secret)},
        good | {"url": "ftp://example.org/w.tar"},
        good | {"checksum_type": "md5"},
        good | {"size": True},
        good | {"key": ["not", "a", "key"]},
        "not an entry",
    ]
    (cat / "metadata.json").write_text(json.dumps(doc))
    offers, why = open_catalog(url).warm_offers(Published(NAME, "1.0.0", url))
    assert offers == [] and why == f"{NAME} 1.0.0 in {url} lists no warm image"
    doc["versions"][0]["vagabond"]["warm"] = [good | {"url": "https://boxes.example.org/w.tar"}]
    (cat / "metadata.json").write_text(json.dumps(doc))
    assert [o.url for o in open_catalog(url).warm_offers(Published(NAME, "1.0.0", url))[0]] == [
        "https://boxes.example.org/w.tar"
    ]


def test_an_unreadable_catalog_offers_nothing_and_says_why(tmp_path):
    url = (tmp_path / "none" / "metadata.json").as_uri()
    offers, why = open_catalog(url).warm_offers(Published(NAME, "1.0.0", url))
    assert offers == [] and why.startswith(f"catalog {url} could not be read")


@pytest.fixture
def served(tmp_path):
    """An HTTP server on this host's loopback serving a directory of the test's own."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_warm_image_over_http_is_downloaded_checked_and_an_error_is_one_line(published, served):
    cat, url, warm = published
    root, base = served
    (root / "w.tar").write_bytes(warm.read_bytes())
    found = WarmOffer(KEY, f"{base}/w.tar", files.sha256_file(warm), warm.stat().st_size)
    catalog = open_catalog(url)
    got = catalog.download_warm(found)
    assert got.read_bytes() == warm.read_bytes()
    got.unlink()
    bigger = WarmOffer(KEY, f"{base}/w.tar", found.sha256, found.size - 1)  # the server sends more than said
    with pytest.raises(PublishError, match="does not match its sha256"):
        catalog.download_warm(bigger)
    with pytest.raises(PublishError, match=r"^the warm image at .*/gone.tar could not be downloaded: HTTP Error 404"):
        catalog.download_warm(WarmOffer(KEY, f"{base}/gone.tar", "0" * 64, 10))
    assert list(got.parent.iterdir()) == [], "nothing of a failed download stays (none resumes it)"
