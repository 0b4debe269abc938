"""The clamav plugin without popgate: `python3 -m popgate check` and popgate.testing.check
on .eml files against a real clamd (pgtest.clamd, over its unix socket and TCP), clamd's
answers as the plugin reads them, a scan given up mid-send, and the option errors."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from pgtest.clamd import (EICAR, VIRUS_NAME, Clamd, FakeClamd, clean_message,  # noqa: E402
                          eicar_attachment_message, eicar_plain_message, padded)

from popgate.plugins import clamav  # noqa: E402
from popgate.testing import check  # noqa: E402

# check(PLUGIN, ...) imports the module afresh (as a SIGHUP reload would), so its
# ClamdError is another class than clamav.ClamdError: tests that expect one pass the class.

PLUGIN = "python:popgate.plugins.clamav"
REJECT = f"reject: virus found: {VIRUS_NAME}\n".encode()


@pytest.fixture(scope="module")
def clamd():
    with Clamd(tcp=True, unix_socket=True, stream_max_length="1M") as cd:
        yield cd


@pytest.fixture
def emls(tmp_path: Path) -> dict[str, Path]:
    files = {"plain": eicar_plain_message(), "attached": eicar_attachment_message(),
             "clean": clean_message(),
             # LF line ends, as an .eml saved by a mail client often has them.
             "clean-lf": clean_message("clean-lf").replace(b"\r\n", b"\n")}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.eml"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", "popgate", "check", PLUGIN,
                               *map(str, args)], capture_output=True, env=env, timeout=60)

    return run


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_popgate_check_rejects_eicar_plain_and_attached_and_passes_clean(
        run, emls, clamd, transport):
    target = clamd.socket_path if transport == "unix" else clamd.address
    before = len(clamd.scans())
    for name in ("plain", "attached"):
        done = run(emls[name], "--option", f"clamd={target}")
        assert (done.returncode, done.stdout) == (0, REJECT), done.stderr
    for name in ("clean", "clean-lf"):
        done = run(emls[name], "--option", f"clamd={target}")
        assert (done.returncode, done.stdout) == (0, b"pass\n"), done.stderr
    lines = clamd.wait_for_scans(before + 4)[before:]
    via = "instream(local)" if transport == "unix" else "instream(127.0.0.1@"
    assert len(lines) == 4 and all(via in line for line in lines), lines


def test_popgate_check_with_header_shows_the_field_it_adds(run, emls, clamd):
    done = run(emls["clean"], "--option", f"clamd={clamd.address}", "--option", "header=true")
    assert (done.returncode, done.stdout) == (0, b"pass\n+ X-Virus-Scanned: clamav\n"), done.stderr
    done = run(emls["clean"], "--option", f"clamd={clamd.address}", "--option", "header=true",
               "--option", "max_size=100")
    assert done.stdout == b"pass\n+ X-Virus-Scanned: clamav (not scanned: over max_size)\n"


def test_popgate_check_top_scans_the_preview_as_cut(run, emls, clamd):
    # `check --top 0` hands the plugin the header block only: no EICAR in it. (In the
    # proxy a whole-message chain runs on the whole message for TOP.)
    done = run(emls["plain"], "--option", f"clamd={clamd.address}", "--top", "0")
    assert (done.returncode, done.stdout) == (0, b"pass\n"), done.stderr
    done = run(emls["plain"], "--option", f"clamd={clamd.address}", "--top", "10")
    assert (done.returncode, done.stdout) == (0, REJECT), done.stderr


def test_check_in_python_the_message_is_unchanged_and_the_reason_names_the_virus(clamd):
    result = check(PLUGIN, eicar_attachment_message(), options={"clamd": str(clamd.socket_path)})
    assert (result.verdict, result.reason) == ("reject", f"virus found: {VIRUS_NAME}")
    assert result.message.raw == eicar_attachment_message()
    result = check(clamav.ClamAV, clean_message(), options={"clamd": clamd.address})
    assert (result.verdict, result.lines, result.message.raw) == ("pass", [], clean_message())


def test_over_max_size_passes_unscanned_whole_and_logged(clamd, caplog):
    big = padded(eicar_plain_message("big"), 5000)
    before = len(clamd.wait_for_scans(0))
    with caplog.at_level(logging.WARNING, logger="popgate.plugins.clamav"):
        result = check(PLUGIN, big, options={"clamd": clamd.address, "max_size": 4096})
    assert result.verdict == "pass"
    assert result.message.raw == big and EICAR in big  # not cut, not edited
    assert f"RETR 1: {len(big)} bytes, over max_size (4096): passed unscanned" in caplog.text
    # At max_size exactly it is scanned.
    result = check(PLUGIN, big, options={"clamd": clamd.address, "max_size": len(big)})
    assert result.verdict == "reject"
    time.sleep(0.3)
    assert len(clamd.wait_for_scans(before + 1)) == before + 1


def exactly(message: bytes, size: int) -> bytes:
    """`message` with one more body line, `size` bytes in all."""
    return message + b"y" * (size - len(message) - 2) + b"\r\n"


def test_max_size_equal_to_streammaxlength_meets_clamd_at_the_byte(clamd):
    # StreamMaxLength 1M: clamd takes 1048576 bytes and refuses one more, as the plugin
    # with max_size = 1048576 scans 1048576 bytes and passes one more unscanned.
    options = {"clamd": clamd.address, "max_size": 1048576}
    at_limit = exactly(eicar_plain_message("at-limit"), 1048576)
    assert check(PLUGIN, at_limit, options=options).verdict == "reject"
    over = exactly(eicar_plain_message("over-limit"), 1048577)
    result = check(PLUGIN, over, options=options)
    assert (result.verdict, result.message.raw) == ("pass", over)


def test_clamds_size_limit_raises_never_passes(run, tmp_path, clamd):
    big = padded(eicar_plain_message("over-1m"), 1_100_000)
    for target in (clamd.address, str(clamd.socket_path)):
        with pytest.raises(clamav.ClamdError, match="INSTREAM size limit exceeded"):
            check(clamav.ClamAV, big, options={"clamd": target})
    path = tmp_path / "big.eml"
    path.write_bytes(big)
    done = run(path, "--option", f"clamd={clamd.address}")
    assert done.returncode == 2 and b"INSTREAM size limit exceeded" in done.stderr


def test_clamd_down_raises_and_configure_warns(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="popgate.plugins.clamav"):
        for target in ("127.0.0.1:1", str(tmp_path / "no.sock")):
            with pytest.raises(clamav.ClamdError, match="can't connect to clamd at"):
                check(clamav.ClamAV, clean_message(), options={"clamd": target})
    assert caplog.text.count("does not answer now") == 2


def test_configure_logs_clamds_version(clamd, caplog):
    with caplog.at_level(logging.INFO, logger="popgate.plugins.clamav"):
        check(PLUGIN, clean_message(), options={"clamd": clamd.address})
    assert f"clamd at {clamd.address}: ClamAV 1." in caplog.text


@pytest.mark.parametrize("answer, expected", [
    (b"stream: OK\0", None),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", "Win.Test.EICAR_HDB-1"),
    (b"stream: A FOUND\0stream: B FOUND\0", "A, B"),  # AllMatchScan
    (b"stream: OK", None),  # without the NUL (clamd without the z prefix)
])
def test_answers_that_are_verdicts(answer, expected):
    assert clamav.parse_answer(answer, clamav.ClamdAddress(path="/x")) == expected


@pytest.mark.parametrize("answer, message", [
    (b"INSTREAM size limit exceeded. ERROR\0", "answered 'INSTREAM size limit exceeded. ERROR'"),
    (b"stream: Can't allocate memory ERROR\0", "ERROR"),
    (b"", "without an answer"),
    (b"\0\0", "without an answer"),
    (b"PONG\0", "answered 'PONG'"),
    (b"stream: OK\0stream: x ERROR\0", "ERROR"),
])
def test_answers_that_are_errors(answer, message):
    with pytest.raises(clamav.ClamdError, match=message):
        clamav.parse_answer(answer, clamav.ClamdAddress(path="/x"))


def test_a_garbled_answer_from_a_fake_clamd_raises():
    with FakeClamd(answer=b"stream: maybe\0") as fake:
        with pytest.raises(clamav.ClamdError, match="answered 'stream: maybe'"):
            check(clamav.ClamAV, clean_message(), options={"clamd": fake.address})


@pytest.mark.parametrize("read", [True, False])
def test_a_scan_cancelled_at_the_timeout_ends_at_once_and_closes_the_connection(read):
    # popgate cancels an async hook at its timeout (asyncio.wait_for) and waits for it to
    # end: the scan must not hang in its clean-up, even with sends blocked (read=False).
    data = padded(clean_message(), 4_000_000)
    with FakeClamd(answer=None, read=read) as fake:
        address = clamav.clamd_address(fake.address)
        began = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(asyncio.wait_for(clamav.scan(address, data), 0.5))
        assert time.monotonic() - began < 2.0
        if read:
            deadline = time.monotonic() + 5
            while fake.closed < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fake.closed == 1


@pytest.mark.parametrize("text, host, port, path", [
    ("127.0.0.1:3310", "127.0.0.1", 3310, None),
    ("clamd.example.org:3310", "clamd.example.org", 3310, None),
    ("[::1]:3310", "::1", 3310, None),
    ("/var/run/clamav/clamd.ctl", "", 0, "/var/run/clamav/clamd.ctl"),
])
def test_clamd_addresses(text, host, port, path):
    address = clamav.clamd_address(text)
    assert (address.host, address.port, address.path) == (host, port, path)
    assert str(address) == text


@pytest.mark.parametrize("options, error, message", [
    ({"clamd": 3310}, TypeError, "option clamd must be a string"),
    ({"clamd": ""}, TypeError, "option clamd must be a string"),
    ({"clamd": "localhost"}, ValueError, "HOST:PORT or a unix socket's absolute path"),
    ({"clamd": "run/clamd.ctl"}, ValueError, "HOST:PORT or a unix socket's absolute path"),
    ({"clamd": "host:0"}, ValueError, "port 0 is not between 1 and 65535"),
    ({"clamd": "::1:3310"}, ValueError, "HOST:PORT"),
    ({"max_size": "25M"}, TypeError, "option max_size must be an integer"),
    ({"max_size": True}, TypeError, "option max_size must be an integer"),
    ({"max_size": 1.5}, TypeError, "option max_size must be an integer"),
    ({"max_size": -1}, ValueError, "option max_size must be positive"),
    ({"header": 1}, TypeError, "option header must be true or false"),
    ({"timeout_s": 3}, ValueError, "unknown option timeout_s"),
])
def test_bad_options_raise_in_configure(options, error, message):
    with pytest.raises(error, match=message):
        check(PLUGIN, clean_message(), options=options)


def test_a_bad_option_is_exit_2_from_the_command_line(run, emls):
    done = run(emls["clean"], "--option", "max_size=25M")
    assert done.returncode == 2
    assert b"clamav: option max_size must be an integer (bytes), not '25M'" in done.stderr
