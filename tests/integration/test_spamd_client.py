"""The spamd client (plugins/spam_tag) against a real SpamAssassin spamd.

Drives the client through its command-line probe, spamd_probe ($SPAMD_PROBE_BIN,
else <repo>/build/spamd_probe): message on stdin, JSON on stdout. A missing
probe fails these tests (it does not skip them)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pgtest.spamd import Spamd, gtube_message, ham_message

REPO = Path(__file__).resolve().parents[2]

# spamd_probe's exit statuses (spamd_probe.cc).
EXIT_OK = 0
EXIT_TOO_LARGE = 3
EXIT_REFUSED = 5


def probe_bin() -> Path:
    return Path(os.environ.get("SPAMD_PROBE_BIN", REPO / "build" / "spamd_probe"))


def probe(address: str, message: bytes = b"", *args: str, timeout: float = 60):
    exe = probe_bin()
    if not exe.exists():
        pytest.fail(f"spamd_probe not found at {exe} (set SPAMD_PROBE_BIN or build it)")
    start = time.monotonic()
    proc = subprocess.run([str(exe), "--address", address, *args], input=message,
                          capture_output=True, timeout=timeout)
    elapsed = time.monotonic() - start
    assert proc.stdout, f"no output; stderr: {proc.stderr!r}"
    return proc.returncode, json.loads(proc.stdout), elapsed


def header_map(result: dict) -> dict[str, str]:
    return {h["name"]: h["value"] for h in result["headers"]}


@pytest.fixture(scope="module")
def spamd():
    with Spamd(unix_socket=True) as sd:
        yield sd


def test_gtube_is_spam(spamd):
    rc, result, _ = probe(spamd.address, gtube_message())
    assert rc == EXIT_OK, result
    assert result["ok"] is True
    assert result["is_spam"] is True
    assert result["score"] >= 1000
    assert result["threshold_text"] == "5.0"
    headers = header_map(result)
    assert headers["X-Spam-Flag"] == "YES"
    assert headers["X-Spam-Status"].startswith("Yes, score=1000.0 required=5.0 tests=")
    assert "GTUBE" in headers["X-Spam-Status"]
    assert headers["X-Spam-Level"] == "*" * 50
    assert headers["X-Spam-Checker-Version"].startswith("SpamAssassin ")
    # Only SpamAssassin's fields come back, unfolded in value, as written in raw.
    assert all(name.startswith("X-Spam-") for name in headers)
    for h in result["headers"]:
        assert "\n" not in h["value"]
        assert h["raw"].startswith(h["name"] + ":")
    status = next(h for h in result["headers"] if h["name"] == "X-Spam-Status")
    assert "\r\n\t" in status["raw"]  # SpamAssassin folds X-Spam-Status


def test_ordinary_message_is_not_spam(spamd):
    rc, result, _ = probe(spamd.address, ham_message())
    assert rc == EXIT_OK, result
    assert result["is_spam"] is False
    assert result["score"] < result["threshold"]
    headers = header_map(result)
    assert "X-Spam-Flag" not in headers
    assert headers["X-Spam-Status"].startswith("No, ")
    assert headers["X-Spam-Level"] == ""


def test_forged_spam_headers_in_the_message_do_not_come_back(spamd):
    forged = ham_message().replace(
        b"Subject:", b"X-Spam-Flag: YES\r\nX-Spam-Score: 99\r\nSubject:", 1)
    rc, result, _ = probe(spamd.address, forged)
    assert rc == EXIT_OK, result
    assert result["is_spam"] is False
    headers = header_map(result)
    assert "X-Spam-Flag" not in headers
    assert "X-Spam-Score" not in headers


def test_unix_socket_and_user(spamd):
    rc, result, _ = probe(str(spamd.socket_path), gtube_message(), "--user", "alice")
    assert rc == EXIT_OK, result
    assert result["is_spam"] is True
    rc, result, _ = probe(f"unix:{spamd.socket_path}", b"", "--ping")
    assert rc == EXIT_OK, result


def test_ping(spamd):
    rc, result, _ = probe(spamd.address, b"", "--ping")
    assert rc == EXIT_OK and result["ok"] is True, result


def test_too_large_is_not_sent(spamd):
    message = gtube_message()
    rc, result, _ = probe(spamd.address, message, "--max-size", str(len(message) - 1))
    assert rc == EXIT_TOO_LARGE, result
    assert result["error"] == "too_large"


def test_stopped_spamd_is_connection_refused_promptly():
    with Spamd() as sd:
        rc, result, _ = probe(sd.address, ham_message())
        assert rc == EXIT_OK, result
        sd.stop()
        rc, result, elapsed = probe(sd.address, ham_message(), "--timeout-ms", "30000")
    assert rc == EXIT_REFUSED, result
    assert result["ok"] is False
    assert result["error"] == "connection_refused"
    assert sd.address.split(":")[0] in result["detail"]
    assert result["elapsed_ms"] < 1000
    assert elapsed < 5
