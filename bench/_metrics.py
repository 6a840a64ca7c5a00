"""The ledger service's /metrics, read over its unix socket by the benchmarks."""

from __future__ import annotations

import socket
from pathlib import Path


def metrics_text(sock: Path, timeout: float = 10.0) -> str:
    """GET /metrics (Prometheus text) on a fresh connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")
