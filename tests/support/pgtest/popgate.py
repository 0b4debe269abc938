"""Start and stop the popgate binary for tests.

    pg = Popgate.start(["--upstream", dc.address])
    ... connect to pg.host, pg.port ...
    rc = pg.stop()          # SIGTERM, wait; raises if it does not exit 0
    assert "something" in pg.log

The binary is $POPGATE_BIN, else <repo>/build/popgate.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LISTEN_RE = re.compile(rb"listening on (\S+):(\d+)")


def popgate_bin() -> Path:
    return Path(os.environ.get("POPGATE_BIN", REPO / "build" / "popgate"))


class PopgateError(RuntimeError):
    pass


class Popgate:
    def __init__(self, proc: subprocess.Popen, argv: list[str]):
        self.proc = proc
        self.argv = argv
        self.host: str | None = None
        self.port: int | None = None
        self._log = bytearray()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self.stopped = False  # stop() was called
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    # ------------------------------------------------------------ start
    @classmethod
    def start(cls, args: list[str], *, binary: str | os.PathLike | None = None,
              listen: str = "127.0.0.1:0", timeout: float = 10.0,
              env: dict | None = None, preexec_fn=None) -> "Popgate":
        """Run popgate with `--listen LISTEN` (unless args has --listen) plus
        `args`; wait for its `listening on HOST:PORT` line. `preexec_fn` runs in
        the child before popgate starts (e.g. to lower its RLIMIT_NOFILE)."""
        exe = Path(binary) if binary else popgate_bin()
        if not exe.exists():
            raise PopgateError(f"popgate binary not found at {exe} (set POPGATE_BIN or build it)")
        argv = [str(exe)]
        if "--listen" not in args and "-c" not in args:
            argv += ["--listen", listen]
        argv += list(args)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, preexec_fn=preexec_fn)
        pg = cls(proc, argv)
        if not pg._listening.wait(timeout):
            pg.kill()
            raise PopgateError(f"popgate did not log 'listening on' within {timeout}s; "
                               f"argv={argv}\nstderr:\n{pg.log}")
        if pg.port is None:
            rc = pg.proc.wait()
            raise PopgateError(f"popgate exited with {rc} before listening; argv={argv}\nstderr:\n{pg.log}")
        return pg

    def _read_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            with self._lock:
                self._log += line
            if not self._listening.is_set():
                m = LISTEN_RE.search(line)
                if m:
                    self.host = m.group(1).decode()
                    self.port = int(m.group(2))
                    self._listening.set()
        self._listening.set()  # EOF: process gone; start() reports it

    # ------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        with self._lock:
            return self._log.decode("utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log, start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no popgate log line matching {pattern!r} within {timeout}s; "
                                   f"log tail:\n{self.log[-3000:]}")
            time.sleep(0.05)

    # ------------------------------------------------------------ stop
    def stop(self, timeout: float = 40.0, check: bool = True) -> int:
        """SIGTERM, wait up to `timeout` s (then SIGKILL). With check, raise
        PopgateError unless it exited 0 by itself."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if check:
                    raise PopgateError(f"popgate did not exit within {timeout}s of SIGTERM; "
                                       f"stderr:\n{self.log[-5000:]}")
        self._reader.join(5)
        rc = self.proc.returncode
        if check and rc != 0:
            raise PopgateError(f"popgate exited with {rc} (expected 0 after SIGTERM); "
                               f"stderr:\n{self.log[-5000:]}")
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Popgate":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(check=False)
