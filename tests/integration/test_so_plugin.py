"""A C++ plugin built outside the core, loaded from a shared object (`use = "so:PATH"`),
in popgate between real clients (poplib) and a real Dovecot.

The plugin is tests/so_plugin/add_header.cc (libpopgate_add_header.so): it adds
`X-Popgate-Example: <value>` to every message and needs the header block only. Through
popgate every message must come out as the direct fetch with exactly that one field
added at the end of its header block: body byte-identical (dot lines, 8-bit bytes, a
5 MiB attachment). A library built for another plugin ABI, or one that cannot be
loaded, stops start-up: exit 2 and one line naming where the plugin was configured.

The libraries are looked for in $POPGATE_SO_PLUGIN_DIR (ctest sets it), else beside
the popgate binary.
"""

from __future__ import annotations

import os
import poplib
import subprocess
from pathlib import Path

import pytest

from pgtest import mailbox as mb
from pgtest.dovecot import Dovecot
from pgtest.popgate import Popgate, popgate_bin

poplib._MAXLINE = 1 << 20

USER, PASSWORD = "erin", "Er1n-so-plugin"
HEADER = b"X-Popgate-Example"

MESSAGES = [
    mb.ordinary(1, user=USER),
    mb.dot_lines(),
    mb.eight_bit(),
    mb.no_final_newline(),
    mb.big_attachment(5 * 1024 * 1024),
]


def plugin_dir() -> Path:
    return Path(os.environ.get("POPGATE_SO_PLUGIN_DIR") or popgate_bin().parent)


def library(name: str) -> Path:
    path = plugin_dir() / f"lib{name}.so"
    assert path.exists(), f"plugin not built: {path} (set POPGATE_SO_PLUGIN_DIR)"
    return path


@pytest.fixture(scope="module")
def mailstore():
    with Dovecot(users={USER: PASSWORD}) as dc:
        dc.populate(USER, MESSAGES)
        yield dc


def write_config(tmp_path: Path, upstream: str, plugin: str) -> tuple[Path, int]:
    """A config whose [[plugin]] table is `plugin`; returns it and the table's line."""
    lines = [
        "[upstream]",
        f'address = "{upstream}"',
        "[[listen]]",
        'address = "127.0.0.1:0"',
        "",
        "[[plugin]]",
        *plugin.splitlines(),
    ]
    path = tmp_path / "popgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, lines.index("[[plugin]]") + 1


def fetch_all(port: int) -> list[tuple[list[bytes], int]]:
    """Every message of the mailbox: its lines (poplib un-stuffs them) and its octets."""
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    try:
        p.user(USER)
        p.pass_(PASSWORD)
        count, _ = p.stat()
        out = []
        for n in range(1, count + 1):
            _, lines, octets = p.retr(n)
            out.append((lines, octets))
        return out
    finally:
        p.quit()


def with_field(lines: list[bytes], field: bytes) -> list[bytes]:
    """`lines` with `field` appended to the header block."""
    blank = lines.index(b"")
    return lines[:blank] + [field] + lines[blank:]


def assert_tagged(through, direct, field: bytes) -> None:
    assert len(through) == len(direct) == len(MESSAGES)
    for n, ((via, via_octets), (plain, plain_octets)) in enumerate(zip(through, direct), 1):
        assert [l for l in via if l.startswith(HEADER + b":")] == [field], f"message {n}"
        # Everything else byte for byte: the header block as it was, the field at its end,
        # the body untouched.
        assert via == with_field(plain, field), f"message {n}"
        assert via_octets == plain_octets + len(field) + 2, f"message {n}"


def test_plugin_adds_its_header_and_leaves_the_body_alone(tmp_path, mailstore):
    config, _ = write_config(tmp_path, mailstore.address,
                             f'use = "so:{library("popgate_add_header")}"')
    with Popgate.start(["-c", str(config)]) as pg:
        through = fetch_all(pg.port)
        assert pg.alive()
    direct = fetch_all(mailstore.port)
    assert_tagged(through, direct, HEADER + b": 1")


def test_plugin_options_reach_it(tmp_path, mailstore):
    config, _ = write_config(tmp_path, mailstore.address,
                             f'use = "so:{library("popgate_add_header")}"\n'
                             'value = "via so plugin"\non_error = "tempfail"\ntimeout = 5')
    with Popgate.start(["-c", str(config)]) as pg:
        through = fetch_all(pg.port)
    assert_tagged(through, fetch_all(mailstore.port), HEADER + b": via so plugin")


def test_plugin_from_the_command_line(mailstore):
    with Popgate.start(["--upstream", mailstore.address,
                        "--plugin", f"so:{library('popgate_add_header')}"]) as pg:
        through = fetch_all(pg.port)
    assert_tagged(through, fetch_all(mailstore.port), HEADER + b": 1")


def run_refused(args: list[str]) -> subprocess.CompletedProcess:
    exe = popgate_bin()
    assert exe.exists(), f"popgate binary not found at {exe}"
    return subprocess.run([str(exe), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)


def test_wrong_abi_version_stops_start_up(tmp_path, mailstore):
    wrong = library("popgate_add_header_wrong_abi")
    config, line = write_config(tmp_path, mailstore.address, f'use = "so:{wrong}"')
    r = run_refused(["-c", str(config)])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == (f"popgate: {config}:{line}: plugin so:{wrong}: "
                        "built for plugin ABI 999, popgate has 4\n")


def test_bad_option_stops_start_up(tmp_path, mailstore):
    so = library("popgate_add_header")
    config, line = write_config(tmp_path, mailstore.address, f'use = "so:{so}"\ncolour = "red"')
    r = run_refused(["-c", str(config)])
    assert r.returncode == 2, r.stderr
    # Named at the option's own line (the one after `use`), not only the table's.
    assert r.stderr == f"popgate: {config}:{line + 2}: plugin[0].colour: unknown option\n"


def some_library() -> str:
    """A shared object that is not a popgate plugin: the C maths library."""
    for candidate in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                      "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6"):
        if Path(candidate).exists():
            return candidate
    return "/lib/libm.so.6"


@pytest.mark.parametrize("spec, why", [
    (f"so:{some_library()}", "not a popgate plugin (no popgate_plugin_abi_version)"),
    ("so:/nonexistent/libnothing.so", "cannot load: /nonexistent/libnothing.so: "),
    (f"so:{Path(__file__)}", "cannot load: "),
    ("so:", 'expected a path after "so:"'),
], ids=["not-a-plugin", "missing-file", "not-a-library", "empty-path"])
def test_unloadable_library_stops_start_up(mailstore, spec, why):
    r = run_refused(["--upstream", mailstore.address, "--plugin", spec])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"popgate: --plugin: plugin {spec}: {why}"), r.stderr
