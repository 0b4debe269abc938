"""Logs that name the side at fault and the cause as it is (issue 11, point 4).

- A client that vanishes mid-RETR is logged as the client closing, never as the
  upstream failing ("upstream failed during RETR response: Operation canceled").
- Out of descriptors (EMFILE), the log says "Too many open files" with the limit,
  not "Operation canceled", and the client is not told the upstream is down;
  the accept loop's repeated failures are rate-limited with a count.
- At start-up popgate warns when max_sessions cannot fit RLIMIT_NOFILE, and raises
  the soft limit to the hard one when that helps.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import struct
import time

import pytest

from pgtest.popgate import Popgate

ALICE = ("alice", "Al1ce-secret")
BIG = 6  # alice's 5 MiB big-attachment message (pgtest.mailbox.alice_messages)


def recv_line(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One line, or what came before EOF/timeout (b"" for nothing)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                break
            data += chunk
    except OSError:  # timeout, reset, or a socket this test closed
        pass
    return data


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a client that crashes or is killed does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def login(sock: socket.socket) -> None:
    assert recv_line(sock).startswith(b"+OK")
    sock.sendall(f"USER {ALICE[0]}\r\n".encode())
    assert recv_line(sock).startswith(b"+OK")
    sock.sendall(f"PASS {ALICE[1]}\r\n".encode())
    assert recv_line(sock).startswith(b"+OK")


# ---------------------------------------------------------------- client drop mid-RETR

def test_client_dropping_mid_retr_is_logged_as_the_client_closing(popgate, dovecot):
    sock = socket.socket()
    # A small receive window keeps popgate mid-response: 5 MiB cannot all sit in the
    # kernel's buffers, so the RETR is still being relayed when the client goes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((popgate.host, popgate.port))
    login(sock)
    sock.sendall(f"RETR {BIG}\r\n".encode())
    got = b""
    while len(got) < 8 * 1024:
        got += sock.recv(4096)
    assert got.startswith(b"+OK")
    time.sleep(0.3)  # popgate is now blocked writing to the full window
    reset(sock)

    m = popgate.wait_for_log(r"session (\d+) client closed the connection during RETR response")
    session = m.group(1)
    popgate.wait_for_log(rf"session {session} end .*reason=client-closed")
    line = popgate.log[m.start():popgate.log.index("\n", m.start())]
    assert "upstream" not in line, line
    assert "upstream failed" not in popgate.log, popgate.log[-3000:]
    assert "Operation canceled" not in popgate.log, popgate.log[-3000:]

    # Dovecot was fine all along: the next client is served.
    with socket.create_connection((popgate.host, popgate.port), timeout=10) as again:
        login(again)
        again.sendall(b"QUIT\r\n")
        assert recv_line(again).startswith(b"+OK")


# ---------------------------------------------------------------- descriptor limits

def limit_nofile(soft: int, hard: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_limits(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def test_soft_limit_is_raised_to_the_hard_one_when_it_helps(dovecot, popgate_binary):
    with Popgate.start(["--upstream", dovecot.address, "--max-sessions", "1000"],
                       binary=popgate_binary, preexec_fn=limit_nofile(256, 4096)) as pg:
        assert re.search(r" info file descriptor limit raised from 256 to 4096 \(hard limit 4096\)",
                         pg.log), pg.log
        assert "max_sessions 1000 needs" not in pg.log  # 4096 is enough: no warning
        assert open_limits(pg.pid) == (4096, 4096)
        assert pg.stop() == 0


# Under ASan popgate is several times slower and holds more descriptors of its own, so
# the race this test sets up (new clients every 50 ms against a 100 ms accept retry)
# plays out differently; the plain build runs it.
@pytest.mark.skipif("LSAN_OPTIONS" in os.environ,
                    reason="timing-dependent descriptor exhaustion: run in the plain build")
def test_out_of_descriptors_says_so(dovecot, popgate_binary):
    """32 descriptors, soft and hard, so the limit cannot be raised, and a
    max_sessions far beyond it: a start-up warning; then clients until descriptors
    run out, which the log calls EMFILE (rate-limited); then popgate serves again."""
    pg = Popgate.start(["--upstream", dovecot.address, "--max-sessions", "5000",
                        "--threads", "1", "--drain-timeout", "1"],
                       binary=popgate_binary, preexec_fn=limit_nofile(32, 32))
    try:
        assert re.search(r" warning max_sessions 5000 needs about 10032 file descriptors "
                         r".*but the limit is 32 \(hard limit 32\)", pg.log), pg.log
        assert "limit raised" not in pg.log

        # More clients than 32 descriptors hold, opened at once: popgate accepts
        # until none is left, then the rest wait in the listen backlog.
        clients = [socket.create_connection((pg.host, pg.port), timeout=5) for _ in range(40)]
        time.sleep(1.5)  # the ones popgate could take have their answer by now
        replies = [recv_line(s, timeout=0.05) for s in clients]
        served = [r for r in replies if r.startswith(b"+OK")]
        assert served, replies
        assert len(served) < len(clients), replies

        accept_line = (r" warning cannot accept a client on 127\.0\.0\.1:\d+: "
                       r"Too many open files \(the process's descriptor limit, 32\)")
        pg.wait_for_log(accept_line)
        # Free a session's two descriptors: the accept loop takes both at once, and the
        # session that got the first cannot open its upstream socket. Then keep clients
        # coming, faster than the accept loop's 100 ms retry, for over 10 s: it fails
        # again and again, and so does each session that gets the last descriptor.
        reset(clients.pop(replies.index(served[0])))
        feed_until = time.monotonic() + 11
        while time.monotonic() < feed_until:
            clients.append(socket.create_connection((pg.host, pg.port), timeout=5))
            time.sleep(0.05)
        m = pg.wait_for_log(accept_line + r" \(repeated (\d+) times in the last 10 s\)",
                            timeout=5)
        assert int(m.group(1)) >= 20, m.group(0)
        upstream_line = (r" warning session \d+ cannot connect upstream 127\.0\.0\.1:\d+: "
                         r"Too many open files \(the process's descriptor limit, 32\)")
        pg.wait_for_log(upstream_line)
        # One line per 10 s per kind (and before the fix, ten a second).
        assert len(re.findall(r"cannot accept a client", pg.log)) <= 3, pg.log[-5000:]
        assert len(re.findall(r"cannot connect upstream", pg.log)) <= 3, pg.log[-5000:]
        assert "Operation canceled" not in pg.log, pg.log[-5000:]

        # What the clients were told: popgate's own trouble, not the upstream's.
        refused = [r for r in (recv_line(s, timeout=0.05) for s in clients)
                   if r.startswith(b"-ERR")]
        assert refused
        assert set(refused) == {b"-ERR [SYS/TEMP] Proxy out of resources, try again later\r\n"}

        for s in clients:
            s.close()
        # Once the clients are gone, popgate serves again.
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection((pg.host, pg.port), timeout=5) as s:
                greeting = recv_line(s, timeout=2)
                if greeting.startswith(b"+OK"):
                    s.sendall(f"USER {ALICE[0]}\r\nPASS {ALICE[1]}\r\nSTAT\r\nQUIT\r\n".encode())
                    answers = [recv_line(s) for _ in range(4)]
                    assert all(a.startswith(b"+OK") for a in answers), answers
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"popgate did not serve again; got {greeting!r}\n{pg.log[-3000:]}")
            time.sleep(0.2)
        assert pg.stop() == 0
    finally:
        pg.stop(check=False)
        print(pg.log[-6000:])
