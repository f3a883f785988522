"""Ports of a range: in order, never twice, never one a server holds, even a server that shares its port
(SO_REUSEPORT, as gRPC servers bind) and so would let a second server bind it without an error."""

from __future__ import annotations

import socket

import pytest

from samo.free_ports import PortRange


def _listening(port: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_range_skips_listening_ports_and_hands_out_each_port_once() -> None:
    with socket.socket() as probe:  # a free stretch of four ports, found through the kernel
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
    ports = PortRange(first, first + 3)
    with _listening(first + 1, reuse_port=True), _listening(first + 2, reuse_port=False):
        assert [ports.take(), ports.take()] == [first, first + 3]
        with pytest.raises(RuntimeError, match="handed out"):
            ports.take()


def test_a_range_must_be_ports() -> None:
    with pytest.raises(ValueError, match="not a port range"):
        PortRange(70_000, 70_001)
    with pytest.raises(ValueError, match="not a port range"):
        PortRange(30_000, 29_999)
