"""_loader: plugin classes from files and python: modules, class selection, fresh code on
every load, and what the runtime asks of a plugin (hooks, needs, async)."""

from __future__ import annotations

import sys
import textwrap

import pytest

import popgate
from popgate import _loader
from popgate._loader import PluginLoadError

ONE = """
    import popgate

    class One(popgate.Plugin):
        def message(self, session, msg):
            msg.headers.add("X-Version", "1")
"""


def test_loads_the_only_subclass_from_a_file(write_plugin):
    cls = _loader.load_plugin_class(str(write_plugin(ONE)))
    assert cls.__name__ == "One" and issubclass(cls, popgate.Plugin)


def test_each_file_load_is_a_fresh_module_with_the_new_code(write_plugin):
    path = write_plugin(ONE)
    first = _loader.load_plugin_class(str(path))
    # Same size, same second: stale bytecode would give the old class back.
    path.write_text(textwrap.dedent(ONE).replace('"1"', '"2"'))
    second = _loader.load_plugin_class(str(path))
    assert first is not second
    assert first.__module__ != second.__module__
    msg = popgate.Message(b"A: b\r\n\r\n")
    second().message(None, msg)  # type: ignore[attr-defined]
    assert msg.headers.get("X-Version") == "2"


def test_python_module_and_fresh_reload(tmp_path, monkeypatch):
    package = tmp_path / "pgtestpkg"
    (package / "filters").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "filters" / "__init__.py").write_text(textwrap.dedent("""
        import popgate
        from .helper import VALUE

        class Filter(popgate.Plugin):
            value = VALUE
    """))
    (package / "filters" / "helper.py").write_text("VALUE = 'a'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert _loader.load_plugin_class("python:pgtestpkg.filters").value == "a"
        # A submodule changes (another size: bytecode is checked by mtime and size).
        (package / "filters" / "helper.py").write_text("VALUE = 'bbbbbbb'\n")
        assert _loader.load_plugin_class("python:pgtestpkg.filters").value == "bbbbbbb"
        # The module itself changes.
        (package / "filters" / "__init__.py").write_text(textwrap.dedent("""
            import popgate

            class Renamed(popgate.Plugin):
                value = "third"
        """))
        cls = _loader.load_plugin_class("python:pgtestpkg.filters")
        assert (cls.__name__, cls.value) == ("Renamed", "third")
    finally:
        for name in [n for n in sys.modules if n.startswith("pgtestpkg")]:
            del sys.modules[name]


def test_imported_subclasses_do_not_count(write_plugin):
    write_plugin(ONE, name="base_plugin.py")
    path = write_plugin("""
        import sys, os
        sys.path.insert(0, os.path.dirname(__file__))
        import popgate
        from base_plugin import One   # imported: not this module's plugin

        class Mine(One):
            pass
    """, name="mine.py")
    try:
        assert _loader.load_plugin_class(str(path)).__name__ == "Mine"
    finally:
        sys.modules.pop("base_plugin", None)


def test_no_subclass_is_an_error(write_plugin):
    path = write_plugin("""
        import popgate
        from popgate import Plugin   # the base class itself is no plugin

        class NotAPlugin:
            pass
    """)
    with pytest.raises(PluginLoadError, match="no popgate.Plugin subclass"):
        _loader.load_plugin_class(str(path))


def test_several_subclasses_need_a_class(write_plugin):
    path = write_plugin("""
        import popgate

        class A(popgate.Plugin):
            pass

        class B(popgate.Plugin):
            pass
    """)
    with pytest.raises(PluginLoadError, match=r"several.*A, B"):
        _loader.load_plugin_class(str(path))
    assert _loader.load_plugin_class(str(path), "B").__name__ == "B"
    with pytest.raises(PluginLoadError, match="no class C"):
        _loader.load_plugin_class(str(path), "C")


def test_class_must_be_a_plugin_subclass(write_plugin):
    path = write_plugin("""
        import popgate

        class A(popgate.Plugin):
            pass

        class Other:
            pass
    """)
    with pytest.raises(PluginLoadError, match="not a popgate.Plugin subclass"):
        _loader.load_plugin_class(str(path), "Other")


@pytest.mark.parametrize("use", ["plugin.txt", "python:", "python:1bad", "python:a..b"])
def test_bad_use_values(use):
    with pytest.raises(PluginLoadError):
        _loader.load_plugin_class(use)


def test_missing_file(tmp_path):
    with pytest.raises(PluginLoadError, match="no such plugin file"):
        _loader.load_plugin_class(str(tmp_path / "absent.py"))


def test_import_errors_propagate_as_they_are(write_plugin):
    path = write_plugin("import no_such_module_anywhere\n")
    with pytest.raises(ModuleNotFoundError):
        _loader.load_plugin_class(str(path))
    with pytest.raises(ModuleNotFoundError):
        _loader.load_plugin_class("python:no_such_module_anywhere")


def test_make_plugin_configures(write_plugin):
    path = write_plugin("""
        import popgate

        class P(popgate.Plugin):
            def configure(self, options):
                self.options = options
    """)
    plugin = _loader.make_plugin(str(path), None, {"n": 3, "words": ["a"]})
    assert plugin.options == {"n": 3, "words": ["a"]}  # type: ignore[attr-defined]


def test_make_plugin_runs_an_async_configure(write_plugin):
    path = write_plugin("""
        import asyncio
        import popgate

        class P(popgate.Plugin):
            async def configure(self, options):
                await asyncio.sleep(0)
                self.configured = options["x"]
    """)
    assert _loader.make_plugin(str(path), None, {"x": 5}).configured == 5  # type: ignore


def test_make_plugin_without_configure(write_plugin):
    plugin = _loader.make_plugin(str(write_plugin(ONE)), None, {"ignored": 1})
    assert type(plugin).__name__ == "One"


def test_configure_errors_propagate(write_plugin):
    path = write_plugin("""
        import popgate

        class P(popgate.Plugin):
            def configure(self, options):
                raise ValueError("bad option")
    """)
    with pytest.raises(ValueError, match="bad option"):
        _loader.make_plugin(str(path), None, {})


def test_hooks_of_counts_only_overrides():
    class Nothing(popgate.Plugin):
        pass

    class Base(popgate.Plugin):
        def session_start(self, session):
            pass

    class Some(Base):
        async def message(self, session, msg):
            pass

        def done(self):
            pass

        def helper(self):
            pass

    assert _loader.hooks_of(Nothing()) == frozenset()
    assert _loader.hooks_of(Some()) == frozenset({"session_start", "message", "done"})
    assert isinstance(_loader.hooks_of(Some()), frozenset)


def test_is_async():
    class P(popgate.Plugin):
        async def message(self, session, msg):
            pass

        def command(self, session, command):
            pass

    assert _loader.is_async(P(), "message") is True
    assert _loader.is_async(P(), "command") is False
    assert _loader.is_async(P(), "session_end") is False


def test_needs_of():
    class Whole(popgate.Plugin):
        pass

    class Heads(popgate.Plugin):
        needs = popgate.HEADERS

    class Bad(popgate.Plugin):
        needs = "body"

    assert _loader.needs_of(Whole()) == "whole"
    assert _loader.needs_of(Heads()) == "headers"
    with pytest.raises(PluginLoadError, match="needs"):
        _loader.needs_of(Bad())
