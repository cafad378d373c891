"""The bodies of a registry's requests and answers, bounded: a document read whole within a size
and a deadline, a slice of a file sent as one chunk of an upload, and a blob written to its file no
further than the size its manifest declares."""

from __future__ import annotations

import http.client
import time
from typing import IO

from vagabond import timeouts
from vagabond.errors import RegistryError

DOCUMENT_MAX_BYTES = 4 * 2**20


def read_document(resp: http.client.HTTPResponse, started: float, where: str) -> bytes:
    """A registry document, bounded in size and in time as a whole (REGISTRY_DOCUMENT)."""
    data = bytearray()
    while chunk := resp.read1(65536):
        data += chunk
        if len(data) > DOCUMENT_MAX_BYTES:
            raise RegistryError(f"{where}: the answer is larger than a registry document")
        if time.monotonic() - started > timeouts.REGISTRY_DOCUMENT:
            raise RegistryError(f"{where}: the answer took longer than {timeouts.REGISTRY_DOCUMENT:g}s")
    return bytes(data)


class Slice:
    """length bytes of a file from its current position, read as http.client reads a body."""

    def __init__(self, fh: IO[bytes], length: int) -> None:
        self.fh, self.left = fh, length

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.fh.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


class Progress:
    """A download's file, and its progress; a server that ignores the range sends it all again."""

    def __init__(self, sink: IO[bytes], have: int, size: int, progress, limit: int | None = None) -> None:
        self.sink, self.have, self.size, self.progress = sink, have, size, progress
        self.limit = limit  # the size the manifest declares: a byte more is refused, not written

    def begin(self, status: int) -> None:
        if status == 200 and self.have:
            self.sink.seek(0)
            self.sink.truncate()
            self.have = 0

    def write(self, data: bytes) -> None:
        if self.limit is not None and self.have + len(data) > self.limit:
            self.have += len(data)  # (the caller sees have > limit and refuses)
            self.sink.write(data[: max(0, self.limit - (self.have - len(data)))])
            return
        self.sink.write(data)
        self.have += len(data)
        if self.progress:
            self.progress(self.have, self.size)
