"""A byte pipe between a TCP port and a Unix socket, for the runner twin (its network namespace has
only loopback): the twin's side listens on a loopback address's port 80 and hands each connection
to a Unix socket;
the host's side, in the root network namespace, listens on that socket and connects to one fixed
host (Debian's mirror: a package registry) and nothing else.

    python3 tests/forward.py tcp-to-unix ADDRESS PORT SOCKET    (inside the twin's namespace)
    python3 tests/forward.py unix-to-tcp SOCKET HOST PORT
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def pipe(a: socket.socket, b: socket.socket) -> None:
    def one_way(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    threads = [threading.Thread(target=one_way, args=pair, daemon=True) for pair in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()


def serve(listener: socket.socket, connect) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()


def unix_to_tcp(path: str, host: str, port: int) -> threading.Thread:
    """The host's side, as a daemon thread of the caller."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    thread = threading.Thread(
        target=serve, args=(listener, lambda: socket.create_connection((host, port), timeout=60)), daemon=True
    )
    thread.start()
    return thread


def tcp_to_unix(address: str, port: int, path: str) -> None:
    listener = socket.create_server((address, port), backlog=64)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s

    serve(listener, connect)


if __name__ == "__main__":
    if sys.argv[1] == "tcp-to-unix":
        tcp_to_unix(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "unix-to-tcp":
        unix_to_tcp(sys.argv[2], sys.argv[3], int(sys.argv[4])).join()
    else:
        sys.exit(f"usage: {sys.argv[0]} tcp-to-unix ADDRESS PORT SOCKET | unix-to-tcp SOCKET HOST PORT")
