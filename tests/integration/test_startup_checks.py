"""Configuration that cannot work stops start-up before any socket is bound, with one
line in the FILE:LINE: key: reason form and exit status 2 (issue 11, points 2 and 3).

Each config's first listener is a good one on a fixed free port: a check made only
after binding would show as a `listening on` line, or as that port taken."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from pgtest.dovecot import free_port
from pgtest.popgate import popgate_bin
from pgtest.tlsca import TestCA


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("certs")
    return TestCA(base / "one"), TestCA(base / "two")


def run(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, Path, list[str], int]:
    port = free_port()
    text = ('[upstream]\naddress = "127.0.0.1:110"\n'
            f'[[listen]]\naddress = "127.0.0.1:{port}"\n' + body)
    config = tmp_path / "popgate.toml"
    config.write_text(text)
    done = subprocess.run([str(popgate_bin()), "-c", str(config)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    return done, config, text.splitlines(), port


def line_of(lines: list[str], starts: str, after: int = 0) -> int:
    for number, line in enumerate(lines, 1):
        if number > after and line.startswith(starts):
            return number
    raise AssertionError(f"no line {starts!r}")


def assert_refused(done, config: Path, line: int, key: str, reason: str, port: int) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"popgate: {config}:{line}: {key}: "), done.stderr
    assert reason in done.stderr, done.stderr
    assert "listening" not in done.stderr + done.stdout
    with socket.socket() as probe:  # the good first listener was never bound (or let go)
        probe.bind(("127.0.0.1", port))


def tls_listener(cert, key) -> str:
    return (f'[[listen]]\naddress = "127.0.0.1:0"\ntls = "implicit"\n'
            f'cert = "{cert}"\nkey = "{key}"\n')


@pytest.mark.parametrize("what", ["dev-null-cert", "directory-key", "swapped", "mismatched"])
def test_a_bad_certificate_or_key_of_the_second_listener(tmp_path, certs, what):
    one, two = certs
    cert, key = one.localhost.cert, one.localhost.key
    expect_key, reason = "listen[1].cert", "cannot load a certificate chain from"
    if what == "dev-null-cert":
        cert = "/dev/null"
    elif what == "directory-key":
        key = str(tmp_path)
        expect_key, reason = "listen[1].key", "cannot load a private key from"
    elif what == "swapped":
        cert, key = key, cert
    else:
        key = two.localhost.key
        expect_key, reason = "listen[1].key", "mismatch"  # OpenSSL 3 says so when loading it
    done, config, lines, port = run(tmp_path, tls_listener(cert, key))
    second = line_of(lines, "[[listen]]", line_of(lines, "[[listen]]"))
    field = "cert" if expect_key.endswith("cert") else "key"
    assert_refused(done, config, line_of(lines, f"{field} =", second), expect_key, reason, port)


def test_an_address_that_is_not_an_ip_address(tmp_path):
    done, config, lines, port = run(tmp_path, '[[listen]]\naddress = "1270.0.1:1110"\n')
    assert_refused(done, config, line_of(lines, 'address = "1270'), "listen[1].address",
                   "is not an IP address", port)


def test_the_same_address_twice(tmp_path):
    port = free_port()
    done, config, lines, first = run(
        tmp_path, f'[[listen]]\naddress = "127.0.0.1:{port}"\n[[listen]]\n'
                  f'address = "127.0.0.1:{port}"\n')
    assert_refused(done, config, line_of(lines, "address", line_of(lines, "[[listen]]", 5)),
                   "listen[2].address", "is already a listener above", first)


def test_a_quarantine_whose_parent_is_missing(tmp_path):
    missing = tmp_path / "typo" / "quarantine"
    done, config, lines, port = run(tmp_path, f'[quarantine]\npath = "{missing}"\n')
    assert_refused(done, config, line_of(lines, "path ="), "quarantine.path",
                   "No such file or directory", port)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("body, key, reason", [
    ('use = "audit_log"\npath = "{tmp}/typo/audit.jsonl"\n', "path", "audit"),
    ('use = "audit_log"\npath = "{tmp}/audit.jsonl"\nmax_size = 10\n', "max_size",
     "smaller than a few records"),
    ('use = "spam_tag"\nspamd = ""\n', "spamd", "empty address"),
    ('use = "spam_tag"\nspamd = "127.0.0.1:99999"\n', "spamd", "expected host:port"),
    ('use = "spam_tag"\nspamd = "127.0.0.1:0"\n', "spamd", "expected host:port"),
    ('use = "spam_tag"\nspamd = "127.0.0.1:spamd"\n', "spamd", "expected host:port"),
    ('use = "spam_tag"\nspamd = "{tmp}/no-spamd.sock"\n', "spamd", "No such file"),
    ('use = "spam_tag"\nsubject_prefix = "' + "x" * 300 + '"\n', "subject_prefix",
     "at most 200"),
    ('use = "spam_tag"\ntimeout = "soon"\n', "timeout", "expected an integer"),
])
def test_a_plugin_option_that_cannot_work(tmp_path, body, key, reason):
    done, config, lines, port = run(tmp_path, "[[plugin]]\n" + body.replace("{tmp}", str(tmp_path)))
    assert_refused(done, config, line_of(lines, f"{key} ="), f"plugin[0].{key}", reason, port)


def test_filter_memory_above_max_filter_size(tmp_path):
    done, config, lines, port = run(
        tmp_path, "[limits]\nfilter_memory = 2000000\nmax_filter_size = 1000000\n")
    assert_refused(done, config, line_of(lines, "filter_memory ="), "limits.filter_memory",
                   "is above max_filter_size", port)
