"""Finding, loading and configuring a plugin class from a ``use`` value: a file path
ending in ``.py`` or ``python:package.module``. Used by popgate's runtime (start-up and
SIGHUP reloads) and by ``popgate.testing``.

Every load gets the code as it is now: a file is compiled from its current source into a
fresh module each call (so a reload never sees stale bytecode); a ``python:`` module and
its submodules are dropped from ``sys.modules`` before it is imported again.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
from types import ModuleType
from typing import Any

from . import HEADERS, WHOLE_MESSAGE, Plugin

#: Every hook a plugin may define (DESIGN.md).
HOOKS = frozenset({"configure", "session_start", "command", "message", "message_done",
                   "session_end", "done"})

_counter = itertools.count(1)


class PluginLoadError(Exception):
    """The plugin can't be used: the message says why (start-up stops, exit status 2)."""


def _load_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise PluginLoadError(f"{path}: no such plugin file")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"_popgate_plugin_{stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None:
        raise PluginLoadError(f"{path}: can't be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    with open(path, "rb") as file:
        source = file.read()
    code = compile(source, os.path.abspath(path), "exec", dont_inherit=True)
    # Registered while it runs, as an import would (dataclasses and typing look it up).
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load_package_module(name: str) -> ModuleType:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        raise PluginLoadError(f"python:{name}: not a module name (python:package.module)")
    for loaded in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
        del sys.modules[loaded]
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _load_module(use: str) -> ModuleType:
    if use.startswith("python:"):
        return _load_package_module(use[len("python:"):])
    if use.endswith(".py"):
        return _load_file(use)
    raise PluginLoadError(f"{use!r}: expected a file ending in .py or python:package.module")


def _is_plugin_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Plugin) and value is not Plugin


def load_plugin_class(use: str, class_name: str | None = None) -> type[Plugin]:
    """The Plugin subclass `use` defines: `class_name` if given, else the only one defined
    in that module (classes imported into it don't count)."""
    module = _load_module(use)
    if class_name:
        found = getattr(module, class_name, None)
        if found is None:
            raise PluginLoadError(f"{use}: no class {class_name}")
        if not _is_plugin_class(found):
            raise PluginLoadError(f"{use}: {class_name} is not a popgate.Plugin subclass")
        plugin_class: type[Plugin] = found
        return plugin_class
    defined = [value for value in vars(module).values()
               if _is_plugin_class(value) and value.__module__ == module.__name__]
    if not defined:
        raise PluginLoadError(f"{use}: defines no popgate.Plugin subclass")
    if len(defined) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in defined))
        raise PluginLoadError(f"{use}: defines several popgate.Plugin subclasses ({names}); "
                              "say which with class = \"Name\"")
    return defined[0]


async def _wait(awaitable: Any) -> Any:
    return await awaitable


def make_plugin(use: str, class_name: str | None, options: dict[str, Any]) -> Plugin:
    """Loads the class, makes the instance and calls configure(options) if it has one (an
    async configure runs to its end with asyncio.run)."""
    plugin = load_plugin_class(use, class_name)()
    configure(plugin, options)
    return plugin


def configure(plugin: Plugin, options: dict[str, Any]) -> None:
    if "configure" not in hooks_of(plugin):
        return
    result = getattr(plugin, "configure")(options)
    if inspect.isawaitable(result):
        asyncio.run(_wait(result))


def hooks_of(plugin: Plugin) -> frozenset[str]:
    """The hooks the plugin's class defines (not inherited from Plugin)."""
    classes = [cls for cls in type(plugin).__mro__ if cls is not Plugin and cls is not object]
    return frozenset(hook for hook in HOOKS
                     if any(callable(cls.__dict__.get(hook)) for cls in classes))


def needs_of(plugin: Plugin) -> str:
    """"headers" or "whole"."""
    needs = getattr(plugin, "needs", WHOLE_MESSAGE)
    if needs not in (HEADERS, WHOLE_MESSAGE):
        raise PluginLoadError(f"{type(plugin).__name__}.needs must be popgate.HEADERS or "
                              f"popgate.WHOLE_MESSAGE, not {needs!r}")
    return str(needs)


def is_async(plugin: Plugin, hook: str) -> bool:
    """Whether the hook is an ``async def`` (its call returns a coroutine to run)."""
    return inspect.iscoroutinefunction(getattr(plugin, hook, None))
