"""The optional TLS listener: a real certificate from openssl, a real TLS socket on loopback."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vantio_appliance import writer
from vantio_appliance.keys import TenantStore
from vantio_appliance.layout import Layout
from vantio_appliance.verify import verify_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Path, int, Path, str]]:
    if shutil.which("openssl") is None:
        pytest.skip("LOUD SKIP: openssl is absent, no certificate can be made")
    root, sock, port = tmp_path / "ledger", tmp_path / "ingest.sock", _free_port()
    writer.init(root, "vantio.appliance/test/tls", use_flags=False)
    key = TenantStore(Layout(root).tenants).get("default").api_key
    cert, tls_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tls_key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vantio_appliance.cli", "serve", "--dir", str(root), "--socket",
         str(sock), "--no-flags", "--log-level", "warning", "--listen", f"127.0.0.1:{port}",
         "--tls-cert", str(cert), "--tls-key", str(tls_key)], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if sock.exists() and _healthz(port, cert) == 200:
                    break  # the front is up, and the ledger service behind it answers
            except OSError:
                pass
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the TLS listener did not come up"
            time.sleep(0.1)
        yield root, port, cert, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthz(port: int, cert: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_tls_listener_relays_to_the_ledger(tls_server: tuple[Path, int, Path, str]) -> None:
    root, port, cert, key = tls_server
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    body = json.dumps({"action": "block", "target_host": "203.0.113.7:443"})
    conn.request("POST", "/v1/records", body, {"authorization": f"Bearer {key}",
                                               "content-type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert resp.status == 201
    expected = hmac.new(key.encode(), data["trace_id"].encode(), hashlib.sha256).hexdigest()
    assert resp.getheader("x-vantio-signature") == expected
    conn.request("POST", "/v1/records", body, {"content-type": "application/json"})
    refused = conn.getresponse()
    refused.read()
    assert refused.status == 401  # the front passes refusals through unchanged
    conn.close()
    report = verify_dir(root, jobs=1)
    assert report.ok and report.records == 3  # genesis, epoch 0, the one accepted record


def test_tls_listener_speaks_only_tls_and_only_on_loopback(
        tls_server: tuple[Path, int, Path, str]) -> None:
    _, port, _, _ = tls_server
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/healthz")
        plain.getresponse().read()
    plain.close()
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                               text=True, check=True).stdout
    assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{port}"]
