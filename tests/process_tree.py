"""Processes as /proc shows them: children, Python-backend stubs, and whether a process is gone."""

from __future__ import annotations

import socket
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, counts as gone)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stubs(server_pid: int, model: str | None = None) -> list[int]:
    """The Python-backend stubs tritonserver runs, for one model (its `<model>/1/model.py`) or all."""
    return [
        pid
        for pid in children(server_pid)
        if "triton_python_backend_stub" in cmdline(pid)
        and (model is None or f"/{model}/1/model.py" in cmdline(pid))
    ]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on it: a server could bind it now (connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
