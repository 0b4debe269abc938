#!/usr/bin/env python3
"""Where a proxy's user-space time goes: a fixed workload under valgrind's callgrind.

    bench/callgrind.py                       # popgate from build-bench/, both mailboxes
    bench/callgrind.py --target nginx        # nginx's mail proxy, for comparison
    bench/callgrind.py --popgate OTHER/popgate --mailbox large
    bench/callgrind.py --tls up              # popgate --upstream-tls implicit to POP3S
    bench/callgrind.py --tls both --target stunnel   # stunnel-pair, for comparison
    bench/callgrind.py --plugin so:build/libpopgate_add_header.so   # a plugin's cost

Starts a private Dovecot (as scripts/bench.sh does), runs the proxy under
`valgrind --tool=callgrind` (popgate with --threads 1; nginx with master_process off),
sends a fixed number of RETRs through it with popgate_loadgen, and prints the
instructions executed per message and per MB (deterministic, unlike timings on a
shared machine) and the functions with the most instructions, self and inclusive.
Kernel time (the socket copies) is not counted: callgrind sees user space only.
The callgrind.out files are kept in --outdir.

--tls up|both runs the TLS set-ups of run_bench.py (Dovecot serves POP3S with a test
CA's localhost certificate): popgate with --upstream-tls implicit (both: and
--listen-tls implicit, the loadgen speaking TLS), or --target stunnel (stunnel4 in
client mode; both: the server+client pair in one process).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb  # noqa: E402

WORKLOADS = {  # user: (sessions, RETRs per session)
    "small": (1, 2000),
    "large": (1, 20),
}


def annotate(out: Path, inclusive: bool, top: int) -> list[str]:
    args = ["callgrind_annotate", "--threshold=100"]
    if inclusive:
        args.append("--inclusive=yes")
    text = subprocess.run(args + [str(out)], capture_output=True, text=True).stdout
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r"\s*\[[^\]]*\]$", "", m.group(3))
            name = re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>", "<...>", name)
            rows.append(f"{float(m.group(2)):5.1f}%  {name[:150]}")
        if len(rows) >= top:
            break
    return rows


def total_ir(out: Path) -> int:
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["popgate", "nginx", "stunnel"], default="popgate")
    ap.add_argument("--tls", choices=["none", "up", "both"], default="none",
                    help="up: plain client, implicit TLS upstream; both: implicit TLS on both sides")
    ap.add_argument("--popgate", default=os.environ.get("POPGATE_BIN", str(rb.REPO / "build-bench" / "popgate")))
    ap.add_argument("--loadgen", default=os.environ.get("LOADGEN_BIN", str(rb.REPO / "build-bench" / "popgate_loadgen")))
    ap.add_argument("--mailbox", choices=["small", "large", "both"], default="both")
    ap.add_argument("--plugin", action="append", default=[],
                    help="popgate --plugin SPEC (repeatable): measure a filter chain's cost")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--outdir", default="/tmp/popgate-callgrind")
    args = ap.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    if (args.target == "stunnel" and args.tls == "none") or (args.target == "nginx" and args.tls != "none"):
        ap.error("--tls up|both goes with --target popgate or stunnel; stunnel needs --tls")
    tls_conf, ca = {}, None
    if args.tls != "none":
        ca = rb.TestCA(outdir / "tlsca")
        tls_conf = dict(ssl_cert=ca.localhost.cert, ssl_key=ca.localhost.key, pop3s=True)
    dovecot = rb.Dovecot(users=rb.USERS, performance=True, extra_conf="pop3_no_flag_updates = yes\n",
                         **tls_conf)
    dovecot.start()
    try:
        dovecot.populate("small", rb.mailbox.sized_messages(200, 10240, user="small"))
        dovecot.populate("large", rb.mailbox.sized_messages(10, 5 * 1024 * 1024, user="large"))
        users = ["small", "large"] if args.mailbox == "both" else [args.mailbox]
        for user in users:
            sessions, count = WORKLOADS[user]
            port = rb.free_port()
            tls = "" if args.tls == "none" else f".tls-{args.tls}"
            out = outdir / f"callgrind.{args.target}{tls}.{user}.out"
            loadgen_tls = []
            if args.tls == "both":
                loadgen_tls = ["--tls", "--ca", str(ca.cert)]
            if args.target == "popgate":
                cmd = [args.popgate, "--listen", f"127.0.0.1:{port}", "--upstream", dovecot.address,
                       "--threads", "1", "--log-level", "warn"]
                for spec in args.plugin:
                    cmd += ["--plugin", spec]
                if args.tls != "none":
                    cmd[4] = dovecot.pop3s_address
                    cmd += ["--upstream-tls", "implicit", "--upstream-ca", str(ca.cert),
                            "--upstream-server-name", "localhost"]
                if args.tls == "both":
                    cmd += ["--listen-tls", "implicit", "--cert", str(ca.localhost.cert),
                            "--key", str(ca.localhost.key)]
            elif args.target == "stunnel":
                st = rb.Stunnel("/usr/bin/stunnel4", f"stunnel-{args.tls}", dovecot.pop3s_port, ca,
                                outdir, pair=args.tls == "both")
                st.dir.mkdir(parents=True, exist_ok=True)
                st.port = port
                conf = st.dir / "stunnel.conf"
                conf.write_text(st.config(rb.free_port() if st.pair else port))
                cmd = ["/usr/bin/stunnel4", str(conf)]
            else:
                nginx = rb.Nginx("/usr/sbin/nginx", dovecot.port, 1, outdir)
                nginx.dir.mkdir(parents=True, exist_ok=True)
                (nginx.dir / "tmp").mkdir(exist_ok=True)
                nginx.port = port
                conf = nginx.dir / "nginx.conf"
                conf.write_text(nginx.config(rb.free_port()))
                cmd = ["/usr/sbin/nginx", "-p", str(nginx.dir), "-e", str(nginx.dir / "error.log"),
                       "-c", str(conf), "-g", "daemon off; master_process off;"]
            vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd]
            proc = subprocess.Popen(vg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if args.tls == "both":
                    rb.wait_port_tls("127.0.0.1", port, proc, args.target, ca.cert, timeout=60)
                else:
                    rb.wait_port("127.0.0.1", port, proc, args.target, timeout=60)
                # Warm-up outside the count is not possible with callgrind's totals, so the
                # login and LIST of one session are part of the figures (small next to the RETRs).
                r = subprocess.run([args.loadgen, "--port", str(port), "--user", user,
                                    "--pass", rb.USERS[user], "--sessions", str(sessions),
                                    "--count", str(count), *loadgen_tls],
                                   capture_output=True, text=True)
                print(f"loadgen: {r.stdout.strip()[:200]}", file=sys.stderr)
            finally:
                rb.stop_proc(proc, timeout=60)
            time.sleep(0.5)
            ir = total_ir(out)
            messages = sessions * count
            size = 10240 if user == "small" else 5 * 1024 * 1024
            print(f"\n== {args.target}{tls}, {user}: {messages} RETRs of {size} octets: "
                  f"{ir:,} instructions in user space, {ir / messages:,.0f} per message, "
                  f"{ir / (messages * size / 1e6):,.0f} per MB  ({out})")
            print("-- self:")
            print("\n".join(annotate(out, False, args.top)))
            print("-- inclusive:")
            print("\n".join(annotate(out, True, args.top)))
    finally:
        dovecot.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
