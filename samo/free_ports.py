"""Loopback ports for the servers a process starts (tests, benchmarks, `samo build-engines`).

A port the kernel hands out (bind to port 0, then close) can be handed to another process before this
one's server binds it, and gRPC servers (Triton's, the gateway's) bind with SO_REUSEPORT on Linux: two
servers then share the port without an error and the kernel spreads connections between them. Seen in
a two-worker test run: a test's gateway reached the other worker's Triton, which answered while the
test's own Triton was stopped. A process that starts servers beside others doing the same (each test
worker) takes a range of its own (`use_port_range`, below the kernel's ephemeral range): ports then
come from it in order, none twice. The range is this process's, not inherited by its children.
"""

from __future__ import annotations

import socket
import threading


class PortRange:
    """`first`..`last`, handed out in order, each at most once, skipping ports something listens on."""

    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last < 65536:
            raise ValueError(f"not a port range: {first}-{last}")
        self.first, self.last = first, last
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while self._next <= self.last:
                port, self._next = self._next, self._next + 1
                if _bindable(port):
                    return port
        raise RuntimeError(f"every port of {self.first}-{self.last} was handed out")


_range: PortRange | None = None


def use_port_range(first: int, last: int) -> None:
    """From now on `free_port` hands out this process's ports from `first`..`last` (`PortRange`)."""
    global _range
    _range = PortRange(first, last)


def free_port() -> int:
    """A port nothing listens on now: the next one of this process's range, else the kernel's pick."""
    if _range is not None:
        return _range.take()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
