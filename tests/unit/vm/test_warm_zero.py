"""The program that zeroes a guest's free memory before its save (vagabond.vm.warm.ZERO_FREE), run
here against a /proc/meminfo and an mmap of its own: how much it touches, and where."""

from __future__ import annotations

import io

import pytest

from vagabond.vm import warm

MIB = 2**20


class Mapping:
    """An anonymous mapping that records the pages written."""

    def __init__(self, fd: int, size: int, flags: int) -> None:
        import mmap

        assert fd == -1 and flags == mmap.MAP_PRIVATE, "private anonymous memory: no file, no shmem"
        self.size, self.written = size, None

    def __setitem__(self, index: slice, value: bytes) -> None:
        assert index == slice(None, None, 4096) and set(value) <= {0}
        self.written = len(value)


def run_zero_free(monkeypatch, free_kib: int, total_kib: int = 1000000) -> tuple[list[Mapping], dict]:
    import mmap

    maps: list[Mapping] = []
    wrote: dict[str, str] = {}

    class Written(io.StringIO):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def __exit__(self, *exc) -> None:
            wrote[self.path] = self.getvalue()

    def fake_open(path, mode="r"):
        if path == "/proc/meminfo":
            return io.StringIO(f"MemTotal:        {total_kib} kB\nMemFree:        {free_kib} kB\nMemAvailable: 1 kB\n")
        assert path == "/proc/self/oom_score_adj" and mode == "w", path
        return Written(path)

    monkeypatch.setattr(mmap, "mmap", lambda fd, size, flags: maps.append(Mapping(fd, size, flags)) or maps[-1])
    exec(compile(warm.ZERO_FREE, "ZERO_FREE", "exec"), {"open": fake_open, "__name__": "__main__"})
    return maps, wrote


@pytest.mark.parametrize("free_mib", [800, 65, 64, 10])
def test_the_guest_touches_all_its_free_memory_but_64_mib_and_goes_first_to_the_oom_killer(monkeypatch, free_mib):
    maps, wrote = run_zero_free(monkeypatch, free_mib * 1024 + 3)
    size = (free_mib * MIB + 3 * 1024 - 64 * MIB) // 4096 * 4096
    if size > 0:
        (mapping,) = maps
        assert mapping.size == size and mapping.written == size // 4096, "every page of it written, with zeros"
    else:
        assert maps == [], "too little free memory: nothing touched"
    assert wrote.get("/proc/self/oom_score_adj", "").strip() == "1000"


@pytest.mark.parametrize("total_gib, kept_mib", [(1, 64), (2, 64), (16, 512)])
def test_the_margin_grows_with_the_guests_memory(monkeypatch, total_gib, kept_mib):
    free_mib = total_gib * 1024 - 100
    maps, _ = run_zero_free(monkeypatch, free_mib * 1024, total_gib * 2**20)
    assert maps[0].size == (free_mib - kept_mib) * MIB
