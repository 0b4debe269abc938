#!/usr/bin/env python3
"""popgate benchmark: direct Dovecot vs popgate vs nginx's mail proxy, and with TLS
direct POP3S vs popgate vs stunnel, in one run.

    scripts/bench.sh              # full run, about 7 minutes
    scripts/bench.sh --quick      # smoke run, about 80 seconds
    scripts/bench.sh --no-tls     # plain part only, about 3 minutes
    scripts/bench.sh --tls-only   # TLS part only, about 4 minutes

Starts a private Dovecot (high-performance login set-up) with two users, "small"
(200 x 10 KiB messages) and "large" (10 x 5 MiB), then, for each target:

    direct      the loadgen talks to Dovecot itself
    popgate-tN  popgate (no plugins) with --threads N
    popgate-so-tN  the same with one C++ plugin loaded from a shared object
                (--plugin so:libpopgate_add_header.so, tests/so_plugin: adds one header
                field, needs the header block only); "plugin overhead" compares it with
                popgate-tN cell by cell
    popgate-py-tN  the same plugin in Python (--plugin python/popgate/examples/add_header.py,
                headers only, a sync hook: one GIL hand-off per message); compared with
                popgate-tN and with popgate-so-tN
    popgate-keep-tN  popgate with keep_on_server, a command-only plugin run inline
    nginx-wN    nginx's mail proxy (libnginx-mod-mail) with worker_processes N; its
                auth_http is answered by the same nginx (an http {} block)

checks that every message arrives byte-identical to a direct fetch (loadgen --mode
verify; popgate-so: identical apart from the one added field, checked with poplib),
then measures messages/s and MB/s (payload octets, MB = 10^6) for each
mailbox at 1 and 16 concurrent sessions, and the proxy's CPU seconds per GB relayed.
Finally, on fresh proxy processes, the resident memory per idle logged-in session
(VmRSS of the proxy's processes with K sessions open, minus before, over K).

Then the TLS part (skip it with --no-tls, run only it with --tls-only): Dovecot also
serves implicit TLS (POP3S) with a certificate for localhost from a test CA made for
the run (tests/support/pgtest/tlsca.py), and

  plain client -> implicit TLS upstream:
    direct          plaintext Dovecot (the baseline a plain client has anyway)
    direct-pop3s    the loadgen speaks TLS to Dovecot's POP3S port itself
    popgate-tN      popgate --upstream-tls implicit --upstream-ca CA
                    --upstream-server-name localhost, to the POP3S port
    stunnel         stunnel4 in client mode (client = yes, verifyChain, CAfile,
                    checkHost = localhost), to the POP3S port
  implicit TLS on both sides (the loadgen speaks TLS to the target, checking the chain):
    direct-pop3s    as above
    popgate-tN      popgate --listen-tls implicit (localhost certificate) and the
                    upstream as above
    stunnel-pair    one stunnel4 process with two services: a server service
                    terminates the client's TLS and hands the plaintext over loopback
                    to a client service that opens TLS to the POP3S port

all byte-checked against the plain direct fetch and measured like the plain targets
(rounds that visit every TLS target in turn), with the ratio popgate/stunnel.

Prints a table and writes bench/results.md (and results.json) unless --out says
otherwise. Every server listens on 127.0.0.1 on a port picked at run time and is
stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import poplib
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from pgtest import mailbox  # noqa: E402
from pgtest.dovecot import Dovecot, free_port  # noqa: E402
from pgtest.spamd import Spamd  # noqa: E402
from pgtest.tlsca import TestCA  # noqa: E402

USERS = {"small": "Sm4ll-bench", "large": "L4rge-bench"}
# What tests/so_plugin/add_header.cc adds to every message (its default value).
ADDED_FIELD = b"X-Popgate-Example: 1"
# Its Python twin, and what that adds.
PY_ADD_HEADER = REPO / "python" / "popgate" / "examples" / "add_header.py"
PY_ADDED_FIELD = b"X-Popgate-Python: yes"
MB = 1e6
poplib._MAXLINE = 1 << 20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- /proc

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads, in seconds: the scheduler's nanosecond
    count (/proc/PID/task/*/schedstat) where available, else utime + stime (10 ms ticks)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process, utime + stime of /proc/PID/stat (10 ms ticks): unlike the
    per-task schedstat sum, it keeps the time of threads that have exited (stunnel runs
    one thread per connection, and they end with the loadgen's sessions)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process tree: every live process's own time plus what it has
    collected from reaped children (so a pop3 process that exits mid-run still counts)."""
    total, todo = 0.0, [root]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick
            todo += children(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle, since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: irq and softirq time is left out,
    # since the benchmark's own loopback traffic is counted there.
    return (v[0] + v[1] + v[2] + v[7]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return out


def wait_port(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 15) -> None:
    """Wait until host:port greets with +OK."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"+OK"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not greet on {host}:{port} within {timeout}s")


def wait_port_tls(host: str, port: int, proc: subprocess.Popen, what: str, ca: Path,
                  timeout: float = 15) -> None:
    """Wait until host:port completes a TLS handshake (chain checked against `ca`, name
    localhost) and greets with +OK."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"+OK"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not greet over TLS on {host}:{port} within {timeout}s")


def stop_proc(proc: subprocess.Popen | None, timeout: float = 10) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---------------------------------------------------------------------------- targets

class Target:
    """Something the loadgen connects to."""

    name = "?"
    kind = "?"
    port: int
    tls_client = False  # the loadgen must speak (implicit) TLS to it
    # A header field a plugin adds to every message (b"Name: value"): messages then differ
    # from LIST's sizes and from the direct digest by exactly that field.
    added_field: bytes | None = None
    # A filter that tags every message with fields of its own (spam scores): messages
    # then differ from the direct fetch by fields added to the header block only.
    tags: tuple[bytes, ...] = ()
    # A service the proxy's plugin calls (spamd): its CPU is counted beside the proxy's.
    service_pid: int | None = None

    @property
    def label(self) -> str:
        """The name in the tables: TLS targets are named "up/..." or "both/..." inside."""
        return self.name.rsplit("/", 1)[-1]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the processes of pids()."""
        return sum(cpu_seconds(p) for p in self.pids())

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pids(self) -> list[int]:
        """The processes whose CPU and memory count as the proxy's."""
        return []

    def log_problems(self) -> list[str]:
        """Warnings and errors the target logged (popgate: its stderr; nginx: error.log)."""
        path = getattr(self, "log_path", None)
        if not path or not path.exists():
            return []
        lines = path.read_text(errors="replace").splitlines()
        seen, self._log_seen = getattr(self, "_log_seen", 0), len(lines)
        bad = [l for l in lines[seen:]
               if any(w in l for w in (" warning ", " error ", "[error]", "[crit]", "[alert]", "[emerg]"))]
        if not bad:
            return []
        return [f"{self.name} logged {len(bad)} warnings/errors, e.g.: " + "; ".join(bad[:3])]


class ProcessTarget(Target):
    """A target that is a process of ours: started by start(), stopped with SIGTERM."""

    proc: subprocess.Popen | None = None

    def log_hint(self) -> Path:
        """Where to look when it exits with an error."""
        raise NotImplementedError

    def stop(self) -> None:
        rc = stop_proc(self.proc)
        self.proc = None
        self.errlog.close()
        if rc not in (0, None):
            log(f"{self.name} exited with {rc} (see {self.log_hint()})")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []


class Direct(Target):
    kind = "direct"

    def __init__(self, dovecot: Dovecot, pop3s: bool = False):
        self.name = "direct-pop3s" if pop3s else "direct"
        self.port = dovecot.pop3s_port if pop3s else dovecot.port
        self.tls_client = pop3s


class Popgate(ProcessTarget):
    kind = "popgate"

    def __init__(self, binary: Path, upstream: str, threads: int, workdir: Path, name: str = "popgate",
                 tls_args: tuple[str, ...] = (), listen_ca: Path | None = None,
                 plugin: str | None = None, added_field: bytes | None = None,
                 plugin_tables: str = "", tags: tuple[bytes, ...] = (),
                 service_pid: int | None = None):
        """tls_args: popgate's TLS flags; listen_ca: the CA of its --listen-tls implicit
        certificate (the loadgen then speaks TLS to it); plugin: a --plugin value, and
        added_field the header field it adds to every message (if any); plugin_tables:
        [[plugin]] tables for a config file (plugins with options), tags the names of the
        fields they add to every message, service_pid the service they call."""
        self.name = f"{name}-t{threads}"
        self.plugin = plugin
        self.added_field = added_field
        self.plugin_tables = plugin_tables
        self.tags = tags
        self.service_pid = service_pid
        self.binary = binary
        self.upstream = upstream
        self.threads = threads
        self.workdir = workdir
        self.tls_args = tuple(tls_args)
        self.listen_ca = listen_ca
        self.tls_client = listen_ca is not None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.port = free_port()
        self.log_path = self.workdir / f"{self.name.replace('/', '-')}.stderr"
        self.errlog = open(self.log_path, "ab")
        config: tuple[str, ...] = ()
        if self.plugin_tables:  # the flags override the file's listen and upstream
            path = self.workdir / f"{self.name.replace('/', '-')}.toml"
            path.write_text(f'[upstream]\naddress = "{self.upstream}"\n{self.plugin_tables}')
            config = ("-c", str(path))
        self.proc = subprocess.Popen(
            [str(self.binary), *config, "--listen", f"127.0.0.1:{self.port}", "--upstream",
             self.upstream, "--threads", str(self.threads), "--max-sessions", "20000",
             "--log-level", "warn",
             *self.tls_args, *(("--plugin", self.plugin) if self.plugin else ())],
            stdin=subprocess.DEVNULL, stdout=self.errlog, stderr=self.errlog)
        if self.listen_ca:
            wait_port_tls("127.0.0.1", self.port, self.proc, self.name, self.listen_ca)
        else:
            wait_port("127.0.0.1", self.port, self.proc, self.name)

    def log_hint(self) -> Path:
        return self.log_path


class Nginx(ProcessTarget):
    kind = "nginx"

    def __init__(self, binary: str, dovecot_port: int, workers: int, workdir: Path):
        self.name = f"nginx-w{workers}"
        self.binary = binary
        self.dovecot_port = dovecot_port
        self.workers = workers
        self.dir = workdir / self.name
        self.proc: subprocess.Popen | None = None

    def config(self, auth_port: int) -> str:
        d = self.dir
        return f"""# written by bench/run_bench.py
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
user root;
worker_processes {self.workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
  worker_connections 10000;
}}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{auth_port};
    location = /auth {{
      add_header Auth-Status OK;
      add_header Auth-Server 127.0.0.1;
      add_header Auth-Port {self.dovecot_port};
      return 204;
    }}
  }}
}}
mail {{
  server_name bench.popgate.test;
  auth_http 127.0.0.1:{auth_port}/auth;
  proxy on;
  pop3_auth plain;
  server {{
    listen 127.0.0.1:{self.port};
    protocol pop3;
  }}
}}
"""

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        auth_port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config(auth_port))
        self.log_path = self.dir / "error.log"
        self.errlog = open(self.dir / "stderr", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(conf),
             "-g", "daemon off; master_process on;"],
            stdin=subprocess.DEVNULL, stdout=self.errlog, stderr=self.errlog)
        wait_port("127.0.0.1", self.port, self.proc, self.name)

    def log_hint(self) -> Path:
        return self.dir / "error.log"  # SIGTERM is nginx's fast shutdown of master and workers

    def pids(self) -> list[int]:
        # The master does no relaying; the workers are its children.
        return [self.proc.pid] + children(self.proc.pid) if self.proc else []


class Stunnel(ProcessTarget):
    """stunnel4 (one process, a thread per connection), foreground, its pid file and log
    in its own directory.

    pair=False: one client service, plain in, implicit TLS out to `pop3s_port`, the
    chain checked against the CA and the name localhost (what popgate checks).
    pair=True: TLS on both sides, which one stunnel service cannot do: a server service
    (the localhost certificate) relays the plaintext over loopback to a client service
    as above, both in the same process."""

    kind = "stunnel"

    def __init__(self, binary: str, name: str, pop3s_port: int, ca: TestCA, workdir: Path,
                 pair: bool = False):
        self.name = name
        self.binary = binary
        self.pop3s_port = pop3s_port
        self.ca = ca
        self.pair = pair
        self.tls_client = pair
        self.dir = workdir / name.replace("/", "-")
        self.proc: subprocess.Popen | None = None

    def config(self, client_port: int) -> str:
        d, ca = self.dir, self.ca
        conf = f"""; written by bench/run_bench.py
foreground = yes
pid = {d}/stunnel.pid
syslog = no
output = {d}/stunnel.log
debug = warning
"""
        if self.pair:
            conf += f"""
[pop3s-in]
accept = 127.0.0.1:{self.port}
connect = 127.0.0.1:{client_port}
cert = {ca.localhost.cert}
key = {ca.localhost.key}
; Only so that stunnel does not log "No trusted certificates found" (LOG3): client
; certificates are neither asked for nor checked (verify is off).
CAfile = {ca.cert}
"""
        conf += f"""
[pop3s-out]
client = yes
accept = 127.0.0.1:{client_port}
connect = 127.0.0.1:{self.pop3s_port}
sni = localhost
verifyChain = yes
CAfile = {ca.cert}
checkHost = localhost
"""
        return conf

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        client_port = self.port  # the client service's accept port
        while self.pair and client_port == self.port:
            client_port = free_port()
        conf = self.dir / "stunnel.conf"
        conf.write_text(self.config(client_port))
        self.log_path = self.dir / "stunnel.log"
        self.errlog = open(self.dir / "stderr", "ab")
        self.proc = subprocess.Popen([self.binary, str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=self.errlog, stderr=self.errlog)
        if self.pair:
            wait_port_tls("127.0.0.1", self.port, self.proc, self.name, self.ca.cert)
        else:
            wait_port("127.0.0.1", self.port, self.proc, self.name)

    def log_hint(self) -> Path:
        return self.dir

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p) for p in self.pids())

    def log_problems(self) -> list[str]:
        """stunnel logs "LOGn[...]" with n the syslog level; debug = warning keeps 0-4."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        seen, self._log_seen = getattr(self, "_log_seen", 0), len(lines)
        bad = [l for l in lines[seen:] if any(f"LOG{n}[" in l for n in range(5))]
        if not bad:
            return []
        return [f"{self.name} logged {len(bad)} warnings/errors, e.g.: " + "; ".join(bad[:3])]


# ---------------------------------------------------------------------------- loadgen

class Bench:
    def __init__(self, args, dovecot: Dovecot):
        self.args = args
        self.dovecot = dovecot
        self.loadgen = Path(args.loadgen)
        self.failures: list[str] = []
        self.ca: TestCA | None = None  # the TLS part's test CA

    def loadgen_run(self, target: Target, user: str, argv: list[str]) -> dict:
        cmd = [str(self.loadgen), "--port", str(target.port), "--user", user,
               "--pass", USERS[user], *argv]
        if target.tls_client:
            cmd += ["--tls", "--ca", str(self.ca.cert), "--server-name", "localhost"]
        if target.added_field or target.tags:
            cmd.append("--no-list-check")  # messages come out larger than LIST says
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen printed nothing (rc={p.returncode}): {p.stderr}")
        return json.loads(lines[-1])

    def verify(self, target: Target, user: str) -> dict:
        r = self.loadgen_run(target, user, ["--mode", "verify", "--sessions", "2",
                                             "--label", f"{target.name}/{user}/verify"])
        return r

    def measure(self, target: Target, user: str, sessions: int) -> dict:
        threads = 1 if sessions == 1 else self.args.loadgen_threads
        pids = target.pids()
        cpu0 = target.cpu_seconds()
        dovecot0 = tree_cpu_seconds(self.dovecot.pid)
        service0 = tree_cpu_seconds(target.service_pid) if target.service_pid else 0.0
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = self.loadgen_run(target, user, [
            "--mode", "retr", "--sessions", str(sessions), "--threads", str(threads),
            "--duration", str(self.args.duration), "--label", f"{target.name}/{user}/{sessions}"])
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, t1 = machine_busy_seconds(), time.monotonic()
        dovecot_cpu = tree_cpu_seconds(self.dovecot.pid) - dovecot0
        service_cpu = (tree_cpu_seconds(target.service_pid) - service0
                       if target.service_pid else 0.0)
        cpu1 = target.cpu_seconds()
        r["proxy_cpu_s"] = cpu1 - cpu0 if pids else None
        gb = r["payload_bytes"] / 1e9
        r["proxy_cpu_s_per_gb"] = (r["proxy_cpu_s"] / gb) if pids and gb > 0 else None
        loadgen_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        ours = loadgen_cpu + dovecot_cpu + service_cpu + (r["proxy_cpu_s"] or 0)
        r["service_cpu_s"] = service_cpu if target.service_pid else None
        # CPU used by anything outside the benchmark during the cell, as a share of the
        # machine: other jobs on a shared machine make figures lower than they should be.
        r["other_load_pct"] = max(0.0, busy1 - busy0 - ours) / ((t1 - t0) * os.cpu_count()) * 100
        r["loadgen_cpu_s"] = loadgen_cpu
        r["dovecot_cpu_s"] = dovecot_cpu
        return r

    def idle(self, target: Target, sessions: int) -> dict:
        """Fresh target: RSS with `sessions` idle logged-in sessions, minus before."""
        target.start()
        try:
            # One session first, so lazily created per-thread state is in the baseline.
            self.loadgen_run(target, "small", ["--mode", "retr", "--sessions", "2", "--count", "2"])
            time.sleep(0.5)
            before = sum(rss_kib(p) for p in target.pids())
            cmd = [str(self.loadgen), "--port", str(target.port), "--user", "small",
                   "--pass", USERS["small"], "--mode", "idle", "--sessions", str(sessions),
                   "--hold", str(self.args.idle_hold), "--label", f"{target.name}/idle"]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ready = json.loads(p.stdout.readline() or "{}")
            time.sleep(1.0)  # let the last logins settle
            during = sum(rss_kib(q) for q in target.pids())
            out, err = p.communicate(timeout=600)
            final = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"errors": -1}
        finally:
            target.stop()
        return {
            "target": target.name, "sessions": sessions, "logged_in": ready.get("logged_in"),
            "login_seconds": ready.get("login_seconds"), "rss_before_kib": before,
            "rss_during_kib": during,
            "kib_per_session": (during - before) / sessions,
            "errors": final.get("errors"), "quit_ok": final.get("quit_ok"),
            "first_error": final.get("first_error", ""),
        }


# ---------------------------------------------------------------------------- report

def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def table(results: list[dict], direct: dict) -> str:
    rows = ["| mailbox | sessions | target | msg/s | MB/s | vs direct | proxy CPU s/GB | avg latency ms "
            "| MB/s per round | other load | errors |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        d = direct.get((r["user"], r["sessions"]))
        ratio = r["mb_per_s"] / d["mb_per_s"] if d and d["mb_per_s"] else None
        bad = r["errors"] + r["list_mismatches"] + r["size_mismatches"]
        if r["sessions_ok"] != r["sessions"]:
            bad = f"{bad} ({r['sessions_ok']}/{r['sessions']} sessions)"
        rounds = " / ".join(f"{x:g}" for x in r.get("rounds", [r["mb_per_s"]]))
        rows.append(f"| {r['mailbox']} | {r['sessions']} | {r['target']} | {fmt(r['messages_per_s'])} "
                    f"| {fmt(r['mb_per_s'])} | {fmt(ratio, 2) if ratio is not None else '-'} "
                    f"| {fmt(r['proxy_cpu_s_per_gb'], 2)} | {fmt(r['latency_ms_avg'], 2)} "
                    f"| {rounds} | {r['other_load_pct']:.0f}% | {bad} |")
    return "\n".join(rows)


PLUGIN_PREFIXES = ("popgate-so-", "popgate-py-", "popgate-keep-", "popgate-bayes-",
                   "popgate-spamtag-")


def overhead_table(results: list[dict]) -> str:
    """Each popgate-with-a-plugin target against popgate-tN (no plugin), cell by cell (same
    run, same rounds), and the Python plugin against its C++ twin."""
    by_cell = {(r["user"], r["sessions"], r["target"]): r for r in results}

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    rows = ["| mailbox | sessions | plugin target | msg/s | no-plugin msg/s | msg/s ratio "
            "| vs C++ plugin (msg/s) | proxy CPU s/GB | no-plugin CPU s/GB |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        prefix = next((p for p in PLUGIN_PREFIXES if r["target"].startswith(p)), None)
        if not prefix:
            continue
        base = by_cell.get((r["user"], r["sessions"], r["target"].replace(prefix, "popgate-", 1)))
        if not base:
            continue
        twin = (by_cell.get((r["user"], r["sessions"], r["target"].replace(prefix, "popgate-so-", 1)))
                if prefix == "popgate-py-" else None)
        rows.append(f"| {r['mailbox']} | {r['sessions']} | {r['target']} | {fmt(r['messages_per_s'])} "
                    f"| {fmt(base['messages_per_s'])} "
                    f"| {fmt(ratio(r['messages_per_s'], base['messages_per_s']), 3)} "
                    f"| {fmt(ratio(r['messages_per_s'], twin['messages_per_s']), 3) if twin else '-'} "
                    f"| {fmt(r['proxy_cpu_s_per_gb'], 2)} | {fmt(base['proxy_cpu_s_per_gb'], 2)} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def filters_table(results: list[dict]) -> str:
    """The bayes plugin against spam_tag (spamd) cell by cell: messages/s and the CPU
    each message costs, popgate's and spamd's."""
    by_cell = {(r["user"], r["sessions"], r["target"]): r for r in results}
    rows = ["| mailbox | sessions | target | msg/s | popgate CPU ms/msg | service CPU ms/msg "
            "| bayes vs spam_tag (msg/s) |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        if not r["target"].startswith(("popgate-bayes-", "popgate-spamtag-")):
            continue
        msgs = r.get("messages", 0)
        per = (lambda cpu: fmt(cpu * 1000 / msgs, 2) if cpu is not None and msgs else "-")
        ratio = "-"
        if r["target"].startswith("popgate-bayes-"):
            twin = by_cell.get((r["user"], r["sessions"],
                                r["target"].replace("popgate-bayes-", "popgate-spamtag-", 1)))
            if twin and twin["messages_per_s"]:
                ratio = fmt(r["messages_per_s"] / twin["messages_per_s"], 1)
        rows.append(f"| {r['mailbox']} | {r['sessions']} | {r['target']} "
                    f"| {fmt(r['messages_per_s'])} | {per(r['proxy_cpu_s'])} "
                    f"| {per(r.get('service_cpu_s'))} | {ratio} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def idle_table(idle: list[dict]) -> str:
    rows = ["| target | idle sessions | RSS before (KiB) | RSS with sessions (KiB) | KiB per session | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in idle:
        rows.append(f"| {r['target']} | {r['logged_in']}/{r['sessions']} | {r['rss_before_kib']:,} "
                    f"| {r['rss_during_kib']:,} | {r['kib_per_session']:.1f} | {r['errors']} |")
    return "\n".join(rows)



def tls_table(results: list[dict], baselines: list[tuple[str, str]], stunnel: str) -> str:
    """The TLS part's table: `baselines` are (column, target name) pairs; "vs stunnel"
    compares popgate's MB/s and CPU per GB with the `stunnel` target's in the same cell."""
    by_cell = {(r["user"], r["sessions"], r["target"]): r for r in results}
    rows = ["| mailbox | sessions | target | msg/s | MB/s | "
            + " | ".join(col for col, _ in baselines)
            + " | vs stunnel | proxy CPU s/GB | CPU/GB vs stunnel | avg latency ms "
            "| MB/s per round | other load | errors |",
            "| --- | ---: | --- | ---: | ---: | " + "---: | " * len(baselines)
            + "---: | ---: | ---: | ---: | --- | ---: | ---: |"]

    def ratio(a, b):
        return fmt(a / b, 2) if a is not None and b else "-"

    for r in results:
        cells = []
        for _, name in baselines:
            base = by_cell.get((r["user"], r["sessions"], name))
            cells.append(ratio(r["mb_per_s"], base["mb_per_s"]) if base else "-")
        st = by_cell.get((r["user"], r["sessions"], stunnel))
        vs_st = cpu_vs_st = "-"
        if st and r["kind"] == "popgate":
            vs_st = ratio(r["mb_per_s"], st["mb_per_s"])
            cpu_vs_st = ratio(r["proxy_cpu_s_per_gb"], st["proxy_cpu_s_per_gb"])
        bad = r["errors"] + r["list_mismatches"] + r["size_mismatches"]
        if r["sessions_ok"] != r["sessions"]:
            bad = f"{bad} ({r['sessions_ok']}/{r['sessions']} sessions)"
        rounds = " / ".join(f"{x:g}" for x in r.get("rounds", [r["mb_per_s"]]))
        rows.append(f"| {r['mailbox']} | {r['sessions']} | {r['label']} | {fmt(r['messages_per_s'])} "
                    f"| {fmt(r['mb_per_s'])} | " + " | ".join(cells)
                    + f" | {vs_st} | {fmt(r['proxy_cpu_s_per_gb'], 2)} | {cpu_vs_st} "
                    f"| {fmt(r['latency_ms_avg'], 2)} | {rounds} | {r['other_load_pct']:.0f}% | {bad} |")
    return "\n".join(rows)


def verify_targets(bench: Bench, targets: list[Target], reference: dict[str, str],
                   problems: list[str], started: list[Target]) -> None:
    """Starts every target and checks both mailboxes byte for byte against `reference`."""
    for target in targets:
        started.append(target)  # first: one that fails to come up is still stopped
        target.start()
        for user in USERS:
            v = bench.verify(target, user)
            if target.added_field or target.tags:
                # The digest differs by the added field: compare message by message instead.
                if v["errors"]:
                    problems.append(f"{target.name}/{user}: errors {v['errors']} {v['first_error']}")
                problems.extend(check_added_field(bench, target, user) if target.added_field
                                else check_tagged(bench, target, user))
            elif v["errors"] or v["digest"] != reference[user]:
                problems.append(
                    f"{target.name}/{user}: digest {v['digest']} vs direct {reference[user]}, "
                    f"errors {v['errors']} {v['first_error']}")


def fetch_all(port: int, user: str) -> list[tuple[list[bytes], int]]:
    """Every message of `user`'s mailbox (poplib: lines un-stuffed) and its octets."""
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    try:
        p.user(user)
        p.pass_(USERS[user])
        count, _ = p.stat()
        return [p.retr(n)[1:] for n in range(1, count + 1)]
    finally:
        p.quit()


def check_added_field(bench: Bench, target: Target, user: str) -> list[str]:
    """Every message through `target` must be the direct fetch with target.added_field
    appended to its header block, the rest byte for byte."""
    field = target.added_field
    via, direct = fetch_all(target.port, user), fetch_all(bench.dovecot.port, user)
    if len(via) != len(direct):
        return [f"{target.name}/{user}: {len(via)} messages, direct {len(direct)}"]
    for n, ((lines, octets), (plain, plain_octets)) in enumerate(zip(via, direct), 1):
        blank = plain.index(b"") if b"" in plain else len(plain)
        expected = plain[:blank] + [field] + plain[blank:]
        if lines != expected or octets != plain_octets + len(field) + 2:
            return [f"{target.name}/{user}: message {n} is not the direct fetch plus "
                    f"{field.decode()} ({octets} octets, direct {plain_octets})"]
    return []


def trained_bayes_db(work: Path, popgate: Path) -> Path:
    """A bayes database trained on 200 spam and 200 ham of the tests' generated corpus,
    with the plugin's own command, from the package beside the popgate binary."""
    from pgtest import bayes_corpus

    corpus = bayes_corpus.corpus(seed=1234, spam=200, ham=200, name="bench")
    spam = bayes_corpus.write_maildir(work / "bayes-spam", corpus.spam)
    ham = bayes_corpus.write_maildir(work / "bayes-ham", corpus.ham)
    db = work / "bayes.sqlite"
    log(f"training {db} on {len(corpus.spam)} spam and {len(corpus.ham)} ham")
    subprocess.run(["/usr/bin/python3", "-m", "popgate.plugins.bayes", "train", "--db", str(db),
                    "--spam", str(spam), "--ham", str(ham)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(popgate.parent / "python")})
    return db


def check_tagged(bench: Bench, target: Target, user: str) -> list[str]:
    """Every message through `target` must be the direct fetch, its body byte for byte,
    with at most fields named in target.tags added to its header block (and its Subject
    prefixed); in the small mailbox every message must carry the first of them, the one
    the filter always adds (large messages may pass a filter's size limit untagged)."""
    via, direct = fetch_all(target.port, user), fetch_all(bench.dovecot.port, user)
    if len(via) != len(direct):
        return [f"{target.name}/{user}: {len(via)} messages, direct {len(direct)}"]
    tags = tuple(t.lower() + b":" for t in target.tags)
    for n, ((lines, _), (plain, _)) in enumerate(zip(via, direct), 1):
        cut, plain_cut = lines.index(b""), plain.index(b"")
        head = [line for line in lines[:cut] if not line.lower().startswith(b"subject:")]
        theirs, found, in_tag = [], set(), False
        for line in head:
            if line[:1] not in b" \t":  # a field's first line; continuations follow it
                in_tag = line.lower().startswith(tags)
                if in_tag:
                    found.add(line.split(b":", 1)[0].lower() + b":")
            if not in_tag:
                theirs.append(line)
        plain_head = [line for line in plain[:plain_cut]
                      if not line.lower().startswith(b"subject:")]
        missing = [t.decode() for t in tags[:1] if t not in found] if user == "small" else []
        if lines[cut:] != plain[plain_cut:] or theirs != plain_head or missing:
            return [f"{target.name}/{user}: message {n} is not the direct fetch with "
                    f"{', '.join(t.decode() for t in target.tags)} added to its header block"
                    + (f" (missing: {missing})" if missing else "")]
    return []


def measure_rounds(bench: Bench, targets: list[Target], mailboxes: dict[str, str],
                   session_counts: list[int]) -> list[dict]:
    """Every cell of every (running) target, in rounds that visit every target in turn:
    a burst of load from elsewhere on the machine then hurts all targets alike, and
    each figure is the best of its rounds."""
    args = bench.args
    runs: dict[tuple, list[dict]] = {}
    for rnd in range(args.rounds):
        for target in targets:
            for user in USERS:
                for c in session_counts:
                    r = bench.measure(target, user, c)
                    r.update(target=target.name, user=user, mailbox=mailboxes[user], round=rnd + 1)
                    runs.setdefault((target.name, user, c), []).append(r)
                    log(f"  round {rnd + 1} {target.name:10} {user:5} x{c:<2}: "
                        f"{r['messages_per_s']:9.1f} msg/s {r['mb_per_s']:8.1f} MB/s "
                        f"errors={r['errors']} other load={r['other_load_pct']:.0f}%"
                        + (f" cpu/GB={r['proxy_cpu_s_per_gb']:.2f}" if r['proxy_cpu_s_per_gb'] else "")
                        + (f" ({r['first_error']})" if r['first_error'] else ""))
    results = []
    for key, rs in runs.items():
        best = max(rs, key=lambda r: r["mb_per_s"])
        best = dict(best)
        # Errors count in every round, not only the best one.
        for k in ("errors", "list_mismatches", "size_mismatches"):
            best[k] = sum(r[k] for r in rs)
        best["sessions_ok"] = min(r["sessions_ok"] for r in rs)
        best["rounds"] = [round(r["mb_per_s"], 1) for r in rs]
        results.append(best)
    return results


# ---------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run (~1 minute)")
    ap.add_argument("--popgate", default=os.environ.get("POPGATE_BIN", str(REPO / "build-bench" / "popgate")))
    ap.add_argument("--loadgen", default=os.environ.get("LOADGEN_BIN", str(REPO / "build-bench" / "popgate_loadgen")))
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--stunnel", default="/usr/bin/stunnel4")
    ap.add_argument("--duration", type=float, help="seconds per measurement (default 2, quick 1)")
    ap.add_argument("--rounds", type=int, help="measurements per cell; the best counts (default 3, quick 1)")
    ap.add_argument("--threads", default=None, help="popgate threads / nginx workers to try, e.g. 1,2")
    ap.add_argument("--targets", default="direct,popgate,popgate-so,popgate-py,popgate-keep,nginx,stunnel",
                    help="kinds of target (direct covers direct-pop3s; popgate-py: the same plugin in "
                    "Python; popgate-keep: keep_on_server; popgate-so: popgate with the "
                    "add_header .so plugin, plain part only; stunnel: TLS part only)")
    ap.add_argument("--so-plugin", help="the add_header plugin for popgate-so (default: "
                    "libpopgate_add_header.so beside --popgate)")
    part = ap.add_mutually_exclusive_group()
    part.add_argument("--no-tls", action="store_true", help="plain part only (no TLS part)")
    part.add_argument("--tls-only", action="store_true", help="TLS part only (no plain part, no idle memory)")
    ap.add_argument("--extra-popgate", action="append", default=[], metavar="NAME=PATH",
                    help="also measure another popgate binary (e.g. a prototype) under NAME")
    ap.add_argument("--loadgen-threads", type=int, default=1, help="loadgen threads at 16 sessions")
    ap.add_argument("--sessions", default="1,16")
    ap.add_argument("--idle-sessions", type=int, help="default 1000 (quick: 200)")
    ap.add_argument("--idle-hold", type=float, help="seconds the idle sessions stay open (default 3, quick 1)")
    ap.add_argument("--small", default="200x10240", help="COUNTxSIZE of the small mailbox")
    ap.add_argument("--large", default="10x5242880", help="COUNTxSIZE of the large mailbox")
    ap.add_argument("--out", help="markdown report, '' for none (default bench/results.md; "
                    "--quick: bench/results-quick.md)")
    args = ap.parse_args()
    if args.out is None:
        args.out = str(REPO / "bench" / ("results-quick.md" if args.quick else "results.md"))
    args.duration = args.duration or (1.0 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.idle_sessions = args.idle_sessions or (200 if args.quick else 1000)
    args.idle_hold = args.idle_hold or (1.0 if args.quick else 3.0)
    threads = [int(t) for t in (args.threads or ("2" if args.quick else "1,2")).split(",")]
    session_counts = [int(s) for s in args.sessions.split(",")]
    kinds = args.targets.split(",")
    do_plain, do_tls = not args.tls_only, not args.no_tls

    for exe in (args.popgate, args.loadgen):
        if not Path(exe).exists():
            print(f"bench: {exe} not found (build it: see bench/README.md)", file=sys.stderr)
            return 2
    so_plugin = Path(args.so_plugin or Path(args.popgate).parent / "libpopgate_add_header.so")
    if do_plain and "popgate-so" in kinds and not so_plugin.exists():
        print(f"bench: {so_plugin} not found (ninja popgate_add_header in the build directory; "
              "--targets without popgate-so to do without)", file=sys.stderr)
        return 2
    if do_tls and "stunnel" in kinds and not Path(args.stunnel).exists():
        print(f"bench: {args.stunnel} not found (Debian's stunnel4; --targets without stunnel "
              "or --no-tls to do without)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="pgbench-"))
    started: list[Target] = []
    ca: TestCA | None = None
    tls_conf = {}
    if do_tls:
        # Dovecot also serves implicit TLS (pop3s_port) with a localhost certificate from
        # a CA made for this run; its plain port is the same as without.
        ca = TestCA(work / "tlsca")
        tls_conf = dict(ssl_cert=ca.localhost.cert, ssl_key=ca.localhost.key, pop3s=True)
    # pop3_no_flag_updates: RETR does not mark messages \Seen, so QUIT never renames
    # Maildir files while other sessions read them: every run sees the same mailbox.
    dovecot = Dovecot(users=USERS, performance=True, extra_conf="pop3_no_flag_updates = yes\n",
                      **tls_conf)
    t_start = time.monotonic()
    results: list[dict] = []
    tls_results: list[dict] = []
    idle: list[dict] = []
    targets: list[Target] = []
    tls_targets: list[Target] = []
    verify_problems: list[str] = []
    tls_version = ""
    spamd: Spamd | None = None  # for popgate-spamtag, started with it
    bayes_db: Path | None = None  # for popgate-bayes, trained once
    try:
        log("starting Dovecot and writing the mailboxes")
        dovecot.start()
        bench = Bench(args, dovecot)
        bench.ca = ca
        mailboxes = {}
        for user, spec in (("small", args.small), ("large", args.large)):
            count, size = (int(x) for x in spec.split("x"))
            dovecot.populate(user, mailbox.sized_messages(count, size, user=user))
            label = f"{count}x{size // 1024 if size < 1 << 20 else size // (1 << 20)}{'KiB' if size < 1 << 20 else 'MiB'}"
            mailboxes[user] = label
        log(f"Dovecot on {dovecot.address}"
            + (f", POP3S on {dovecot.pop3s_port}" if do_tls else "") + f"; mailboxes {mailboxes}")

        if do_plain:
            if "direct" in kinds:
                targets.append(Direct(dovecot))
            for n in threads:
                if "popgate" in kinds:
                    targets.append(Popgate(Path(args.popgate), dovecot.address, n, work))
                if "popgate-so" in kinds:
                    targets.append(Popgate(Path(args.popgate), dovecot.address, n, work,
                                           name="popgate-so", plugin=f"so:{so_plugin}",
                                           added_field=ADDED_FIELD))
                if "popgate-py" in kinds:
                    targets.append(Popgate(Path(args.popgate), dovecot.address, n, work,
                                           name="popgate-py", plugin=str(PY_ADD_HEADER),
                                           added_field=PY_ADDED_FIELD))
                if "popgate-keep" in kinds:
                    targets.append(Popgate(Path(args.popgate), dovecot.address, n, work,
                                           name="popgate-keep", plugin="keep_on_server"))
                if "popgate-bayes" in kinds:
                    db = bayes_db or (bayes_db := trained_bayes_db(work, Path(args.popgate)))
                    targets.append(Popgate(
                        Path(args.popgate), dovecot.address, n, work, name="popgate-bayes",
                        plugin_tables=f'[[plugin]]\nuse = "python:popgate.plugins.bayes"\n'
                                      f'db = "{db}"\n', tags=(b"X-Popgate-Bayes",)))
                if "popgate-spamtag" in kinds:
                    if spamd is None:
                        log("starting spamd for popgate-spamtag")
                        # Its own directory: spamd's user can't enter the run's (0700).
                        spamd = Spamd(max_children=2).start()
                    targets.append(Popgate(
                        Path(args.popgate), dovecot.address, n, work, name="popgate-spamtag",
                        plugin_tables=f'[[plugin]]\nuse = "spam_tag"\nspamd = "{spamd.address}"\n',
                        tags=(b"X-Spam-Status", b"X-Spam-Checker-Version", b"X-Spam-Flag",
                              b"X-Spam-Level", b"X-Spam-Score"),
                        service_pid=spamd.proc.pid))
                for extra in args.extra_popgate:
                    name, _, path = extra.partition("=")
                    targets.append(Popgate(Path(path), dovecot.address, n, work, name=name))
                if "nginx" in kinds:
                    targets.append(Nginx(args.nginx, dovecot.port, n, work))

        reference: dict[str, str] = {}
        # Direct first: its digests are the reference, and it warms Dovecot's indexes and
        # the page cache.
        direct_target = Direct(dovecot)
        for user in USERS:
            r = bench.verify(direct_target, user)
            reference[user] = r["digest"]
            if r["errors"]:
                verify_problems.append(f"direct/{user}: {r['first_error']}")

        # Every target runs for the whole throughput part, and the cells are measured in
        # rounds, each round visiting every target: a burst of load from elsewhere on the
        # machine then hurts all targets alike, and each figure is the best of its rounds.
        if do_plain:
            verify_targets(bench, targets, reference, verify_problems, started)
            log(f"targets up: {', '.join(f'{t.name} on {t.port}' for t in targets)}; "
                f"{args.rounds} round(s) of {args.duration:g} s per cell")
            results = measure_rounds(bench, targets, mailboxes, session_counts)
            for target in list(started):
                started.remove(target)
                target.stop()
                verify_problems.extend(target.log_problems())

            for target in targets:
                if target.kind == "direct":
                    continue
                log(f"idle memory: {target.name} with {args.idle_sessions} sessions")
                started.append(target)
                r = bench.idle(target, args.idle_sessions)
                started.remove(target)
                verify_problems.extend(target.log_problems())
                idle.append(r)
                log(f"  {r['kib_per_session']:.1f} KiB/session ({r['logged_in']} logged in, errors={r['errors']})")

        if do_tls:
            # The TLS part, in rounds of its own over every TLS target.
            upstream_tls = ("--upstream-tls", "implicit", "--upstream-ca", str(ca.cert),
                            "--upstream-server-name", "localhost")
            listen_tls = ("--listen-tls", "implicit", "--cert", str(ca.localhost.cert),
                          "--key", str(ca.localhost.key))
            popgates = [("popgate", Path(args.popgate))] if "popgate" in kinds else []
            popgates += [(e.partition("=")[0], Path(e.partition("=")[2])) for e in args.extra_popgate]
            if "direct" in kinds:
                tls_targets += [Direct(dovecot), Direct(dovecot, pop3s=True)]
            for section, tls_args, listen_ca in (("up", upstream_tls, None),
                                                 ("both", listen_tls + upstream_tls, ca.cert)):
                for n in threads:
                    for name, binary in popgates:
                        tls_targets.append(Popgate(binary, dovecot.pop3s_address, n, work,
                                                   name=f"{section}/{name}", tls_args=tls_args,
                                                   listen_ca=listen_ca))
                if "stunnel" in kinds:
                    tls_targets.append(Stunnel(args.stunnel, "up/stunnel" if section == "up"
                                               else "both/stunnel-pair", dovecot.pop3s_port, ca,
                                               work, pair=section == "both"))
            verify_targets(bench, tls_targets, reference, verify_problems, started)
            probe = next((t for t in tls_targets if t.tls_client), None)
            if probe:
                tls_version = bench.loadgen_run(probe, "small", ["--mode", "retr", "--count", "1"]).get("tls", "")
            log(f"TLS targets up: {', '.join(f'{t.name} on {t.port}' for t in tls_targets)}; "
                f"{args.rounds} round(s) of {args.duration:g} s per cell")
            tls_results = measure_rounds(bench, tls_targets, mailboxes, session_counts)
            for target in list(started):
                started.remove(target)
                target.stop()
                verify_problems.extend(target.log_problems())
    finally:
        for t in started:
            try:
                t.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if spamd is not None:
            spamd.stop()
            spamd.cleanup()
        dovecot.stop()

    order = {t.name: i for i, t in enumerate(sorted(targets, key=lambda t: (t.kind != "direct", t.kind != "popgate", t.name)))}
    users = list(USERS)
    results.sort(key=lambda r: (users.index(r["user"]), r["sessions"], order[r["target"]]))
    direct = {(r["user"], r["sessions"]): r for r in results if r["target"] == "direct"}
    kind_of = {t.name: t for t in tls_targets}
    tls_order = {t.name: i for i, t in enumerate(sorted(
        tls_targets, key=lambda t: (t.kind != "direct", t.name != "direct", t.kind != "popgate",
                                    t.label if t.kind == "popgate" else "", t.name)))}
    tls_results.sort(key=lambda r: (users.index(r["user"]), r["sessions"], tls_order[r["target"]]))
    for r in tls_results:
        r["kind"] = kind_of[r["target"]].kind
        r["label"] = kind_of[r["target"]].label
    elapsed = time.monotonic() - t_start
    errors = sum(r["errors"] + r["list_mismatches"] + r["size_mismatches"] for r in results + tls_results)
    errors += sum(1 for r in results + tls_results if r["sessions_ok"] != r["sessions"])
    errors += sum(abs(r["errors"] or 0) for r in idle)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    popgate_rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True).stdout.strip()
    if Path(args.popgate).resolve() != (REPO / "build-bench" / "popgate").resolve():
        popgate_rev += f" (binary {args.popgate})"  # POPGATE_BIN: not necessarily this tree

    flags = "".join(f for f, on in ((" --quick", args.quick), (" --no-tls", args.no_tls),
                                    (" --tls-only", args.tls_only)) if on)
    if args.targets != ap.get_default("targets"):
        flags += f" --targets {args.targets}"
    report = [
        "# popgate benchmark results",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')} with `scripts/bench.sh{flags}` "
        f"({elapsed:.0f} s), popgate {popgate_rev}, {os.cpu_count()} CPUs ({cpu}).",
        f"Each cell: {args.duration:g} s of RETR 1..N cycling, best of {args.rounds} round(s) "
        "(rounds interleave the targets); MB = 10^6 payload octets; \"vs direct\" compares MB/s "
        "with the same cell against Dovecot directly; proxy CPU s/GB is the proxy's own "
        "user+system CPU time per GB of payload relayed (all of nginx's processes); \"other load\" "
        "is the share of the machine's CPU that processes outside the benchmark used during the "
        "best round (on a shared machine, figures with a high one are too low). Errors are summed "
        "over all rounds.",
        "",
    ]
    if do_plain:
        report += [
            table(results, direct),
            "",
        ]
        overhead = overhead_table(results)
        if overhead:
            report += [
                "## Plugin overhead (popgate with one plugin vs none, Python vs C++)",
                "",
                "`popgate-so-tN` is `popgate-tN` plus `--plugin so:libpopgate_add_header.so` "
                "(tests/so_plugin/add_header.cc: adds `X-Popgate-Example: 1` to every message, needs "
                "the header block only, so bodies stream past it); `popgate-py-tN` the same plugin in "
                "Python (python/popgate/examples/add_header.py, a sync hook, adds "
                "`X-Popgate-Python: yes`); `popgate-keep-tN` has keep_on_server (commands only, "
                "inline). All measured in the same rounds. Ratios: plugin over no plugin, and the "
                "Python plugin over the C++ one.",
                "",
                overhead,
                "",
            ]
        filters = filters_table(results)
        if filters:
            report += [
                "## Spam filters: bayes (Python) against spam_tag (spamd)",
                "",
                "`popgate-bayes-tN` runs python:popgate.plugins.bayes with a database trained "
                "on 200 spam and 200 ham of the tests' generated corpus (each message is "
                "tokenised and scored; sqlite read once per message); `popgate-spamtag-tN` "
                "runs spam_tag against a private spamd (2 children). Service CPU is spamd's "
                "processes'; the messages' content is the benchmark's, unlike either corpus.",
                "",
                filters,
                "",
            ]
        report += [
            f"## Memory per idle logged-in session ({args.idle_sessions} sessions, VmRSS of the proxy's processes)",
            "",
            idle_table(idle),
            "",
        ]
    if do_tls:
        up = [r for r in tls_results if not r["target"].startswith("both/")]
        both = [r for r in tls_results if r["target"] == "direct-pop3s" or r["target"].startswith("both/")]
        report += [
            "## TLS: plain client, implicit TLS upstream",
            "",
            "The loadgen speaks plaintext to popgate (`--upstream-tls implicit --upstream-ca CA "
            "--upstream-server-name localhost`) and to stunnel4 in client mode (`verifyChain`, "
            "`CAfile`, `checkHost = localhost`); both open TLS to Dovecot's POP3S port, which "
            "serves a localhost certificate from a test CA made for the run. Baselines in the same "
            "rounds: `direct` (plaintext Dovecot) and `direct-pop3s` (the loadgen speaks TLS to "
            "Dovecot's POP3S port itself). \"vs stunnel\" is popgate's MB/s over stunnel's in the "
            "same cell, \"CPU/GB vs stunnel\" the same for CPU seconds per GB (below 1: popgate "
            "uses less). stunnel's CPU is utime+stime of its process (10 ms ticks; it runs a "
            f"thread per connection). Negotiated: {tls_version or 'see results.json'}.",
            "",
            tls_table(up, [("vs direct", "direct"), ("vs pop3s", "direct-pop3s")], "up/stunnel"),
            "",
            "## TLS on both sides (implicit TLS to the client and to the upstream)",
            "",
            "The loadgen speaks TLS (checking the chain and the name localhost) to popgate "
            "(`--listen-tls implicit --cert --key` plus the upstream flags above) and to "
            "`stunnel-pair`: one stunnel4 process with a server service that terminates the "
            "client's TLS and relays the plaintext over loopback to a client service like the "
            "one above (one stunnel service cannot do TLS on both sides). Baseline: "
            "`direct-pop3s`.",
            "",
            tls_table(both, [("vs pop3s", "direct-pop3s")], "both/stunnel-pair"),
            "",
        ]
    report += [
        "## Byte-for-byte check",
        "",
        ("Every target delivered every message of both mailboxes with the same bytes as a direct "
         "fetch (loadgen --mode verify digests match), and every timed RETR had the size LIST gave "
         "and a proper terminator."
         + (" popgate-so and popgate-py: every message was the direct fetch with its plugin's "
            "field (`" + ADDED_FIELD.decode() + "`, `" + PY_ADDED_FIELD.decode()
            + "`) at the end of its header block and nothing else changed (poplib, message by "
            "message); its timed RETRs, larger than LIST says, had proper terminators."
            if any(t.added_field for t in targets) else "")
         if not verify_problems and errors == 0 else
         "PROBLEMS:\n\n" + "\n".join(f"- {p}" for p in verify_problems)
         + f"\n- {errors} errors or mismatches in the timed runs"),
        "",
    ]
    if verify_problems or errors:
        log(f"problems: logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"results": results, "idle": idle, "tls_results": tls_results,
             "verify_problems": verify_problems}, indent=1))
        log(f"wrote {args.out}")
    return 0 if not verify_problems and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
