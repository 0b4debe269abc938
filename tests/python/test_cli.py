"""`python3 -m popgate check`: its output and exit codes, run as users run it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

MESSAGE = (b"From: a@example.org\r\n"
           b"Subject: Big lottery news\r\n"
           b"X-Old: caf\xe9\r\n"
           b"\r\n"
           b"body 1\r\n"
           b"body 2\r\n")


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", "popgate", *map(str, args)],
                              capture_output=True, env=env, timeout=60)

    return run


def test_pass_with_added_header(run, eml, python_dir):
    done = run("check", python_dir / "popgate" / "examples" / "tag_lottery.py", eml)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["pass", "+ X-Lottery: yes"]


def test_pass_without_changes(run, eml, python_dir):
    done = run("check", python_dir / "popgate" / "examples" / "tag_lottery.py", eml,
               "--option", 'words=["nothing-matches"]')
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["pass"]


@pytest.mark.parametrize("helper", ["tempfail", "reject"])
def test_tempfail_and_reject_lines(run, eml, write_plugin, helper):
    path = write_plugin(f"""
        import popgate

        class Stop(popgate.Plugin):
            def message(self, session, msg):
                return popgate.{helper}("no " + msg.headers.get("Subject", ""))
    """)
    done = run("check", path, eml)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == f"{helper}: no Big lottery news"


def test_changed_and_removed_lines_keep_8bit_bytes(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class Edit(popgate.Plugin):
            def message(self, session, msg):
                msg.headers.set("Subject", "[SPAM] " + msg.headers.get("Subject"))
                msg.headers.remove("X-Old")
                msg.headers.add("X-Spam-Flag", "YES")
    """)
    done = run("check", path, eml)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        b"pass",
        b"+ X-Spam-Flag: YES",
        b"- Subject: Big lottery news",
        b"+ Subject: [SPAM] Big lottery news",
        b"- X-Old: caf\xe9",  # out exactly as it came in
    ]


def test_options_are_toml_values_or_plain_strings(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class Show(popgate.Plugin):
            def configure(self, options):
                self.shown = ";".join(f"{k}={type(v).__name__}:{v!r}"
                                      for k, v in sorted(options.items()))

            def message(self, session, msg):
                return popgate.reject(self.shown)
    """)
    done = run("check", path, eml, "--option", "n=3", "--option", "f=2.5",
               "--option", "b=true", "--option", 'l=["a", 1]', "--option", 's="quoted"',
               "--option", "plain=[SPAM] tag", "--option", "d={ k = 1 }")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == (
        "reject: b=bool:True;d=dict:{'k': 1};f=float:2.5;l=list:['a', 1];n=int:3;"
        "plain=str:'[SPAM] tag';s=str:'quoted'")


def test_class_and_top(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class A(popgate.Plugin):
            pass

        class Look(popgate.Plugin):
            def message(self, session, msg):
                return popgate.tempfail(f"{msg.command} {msg.partial} {msg.body!r}")
    """)
    done = run("check", path, eml, "--class", "Look", "--top", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == "tempfail: TOP True b'body 1\\r\\n'"


def test_several_classes_without_class_is_exit_2(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class A(popgate.Plugin):
            pass

        class B(popgate.Plugin):
            pass
    """)
    done = run("check", path, eml)
    assert done.returncode == 2
    assert b"several" in done.stderr


def test_import_error_is_exit_2_with_traceback(run, eml, write_plugin):
    path = write_plugin("import popgate\nimport no_such_module_for_popgate\n")
    done = run("check", path, eml)
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"Traceback (most recent call last)" in done.stderr
    assert b"ModuleNotFoundError: No module named 'no_such_module_for_popgate'" in done.stderr
    assert str(path).encode() in done.stderr  # the frame in the plugin's file


def test_no_plugin_subclass_is_exit_2(run, eml, write_plugin):
    path = write_plugin("import popgate\n\nclass NotOne:\n    pass\n")
    done = run("check", path, eml)
    assert done.returncode == 2
    assert b"Traceback" in done.stderr
    assert b"PluginLoadError" in done.stderr and b"no popgate.Plugin subclass" in done.stderr


def test_raising_configure_is_exit_2(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class P(popgate.Plugin):
            def configure(self, options):
                raise ValueError("threshold: expected a number")
    """)
    done = run("check", path, eml)
    assert done.returncode == 2
    assert b"Traceback" in done.stderr
    assert b"ValueError: threshold: expected a number" in done.stderr
    assert b"in configure" in done.stderr


def test_raising_hook_is_exit_2(run, eml, write_plugin):
    path = write_plugin("""
        import popgate

        class P(popgate.Plugin):
            def message(self, session, msg):
                raise RuntimeError("boom in the hook")
    """)
    done = run("check", path, eml)
    assert done.returncode == 2
    assert b"RuntimeError: boom in the hook" in done.stderr
    assert b"in message" in done.stderr


def test_python_module_plugin(run, eml, tmp_path, python_dir):
    (tmp_path / "pg_cli_mod.py").write_text(
        "import popgate\n\nclass M(popgate.Plugin):\n"
        "    def message(self, session, msg):\n        return popgate.reject('from module')\n")
    env = dict(os.environ, PYTHONPATH=f"{python_dir}:{tmp_path}")
    done = subprocess.run(["/usr/bin/python3", "-m", "popgate", "check", "python:pg_cli_mod",
                           str(eml)], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["reject: from module"]
