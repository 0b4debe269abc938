"""Python's side of popgate: the asyncio loop thread that takes hook calls from the
proxy and answers them. Not for plugins to import: this is what popgate embeds.

Threads (STYLE.md, "The GIL, in five rules"):

- ``serve`` runs on popgate's Python loop thread. popgate's I/O threads queue calls and
  write an eventfd, never taking the GIL; the loop reads the fd and takes the calls.
- ``async def`` hooks run on this loop, each under ``asyncio.wait_for(timeout)``: a call
  past its timeout is cancelled.
- Sync hooks do not come through the loop: popgate's own sync-hook threads (C++, see
  bindings/sync_hook_threads.h) take the GIL and call ``call_sync``; they watch each
  call's timeout themselves and give it up there (its thread finishes the hook on its own
  and its answer is dropped). With every one of those threads stuck in a given-up hook,
  further sync calls wait and time out, following ``on_error``: popgate never starts more
  threads than the bound.
- Each answer (``job.finish_*``) lets go of the GIL and resumes the session on its own
  thread; only the first of an answer, a failure and a timeout counts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from typing import Any

import _popgate  # the embedded module (popgate's own, not the extension)

from . import _hooks, _loader

_DEBUG, _INFO, _WARNING, _ERROR = 0, 1, 2, 3


class _ToPopgateLog(logging.Handler):
    """Plugins' ``logging`` calls end up in popgate's log."""

    def emit(self, record: logging.LogRecord) -> None:
        level = (_DEBUG if record.levelno < logging.INFO else
                 _INFO if record.levelno < logging.WARNING else
                 _WARNING if record.levelno < logging.ERROR else _ERROR)
        try:
            _popgate._log(level, f"python {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log line must never break a hook
            pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "error"


class Runtime:
    def __init__(self) -> None:
        self.plugins: list[Any] = []
        self.names: list[str] = []
        self._sessions: dict[tuple[int, int], Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        root = logging.getLogger()
        root.addHandler(_ToPopgateLog())
        root.setLevel(logging.INFO)

    # -- start-up, on the main thread ------------------------------------------------

    def load(self, use: str, class_name: str, options: dict[str, Any]) -> tuple[Any, ...]:
        """Loads and configures one plugin; (index, needs, hooks, async hooks). Raises
        RuntimeError whose text is the traceback of what went wrong."""
        try:
            plugin = _loader.make_plugin(use, class_name or None, options)
            needs = _loader.needs_of(plugin)
            hooks = sorted(_loader.hooks_of(plugin))
            async_hooks = [hook for hook in hooks if _loader.is_async(plugin, hook)]
        except BaseException:  # noqa: BLE001 - reported whole, start-up stops
            raise RuntimeError(traceback.format_exc().rstrip()) from None
        self.plugins.append(plugin)
        self.names.append(use)
        return (len(self.plugins) - 1, needs, hooks, async_hooks)

    # -- the loop thread --------------------------------------------------------------

    def serve(self, wake_fd: int) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._stopping = False
        loop.add_reader(wake_fd, self._take)
        try:
            loop.run_forever()
            loop.remove_reader(wake_fd)
            loop.run_until_complete(self._done())
        finally:
            loop.close()

    def _take(self) -> None:
        for job in _popgate._take_jobs():
            kind = job.kind
            if kind == "hook":
                self._start(job)
            elif kind == "forget":
                self._sessions.pop((job.plugin, job.session_id), None)
            elif kind == "retire":
                self._retire(job.plugin)
            elif kind == "reload":
                # Off the loop: configure() may be async (asyncio.run needs a thread
                # without a running loop) or slow, and sessions must go on meanwhile.
                threading.Thread(target=self._reload, name="popgate-reload",
                                 daemon=True).start()
            elif kind == "stop" and self._loop is not None:
                self._loop.stop()

    def _session(self, job: Any) -> Any:
        key = (job.plugin, job.session_id)
        fields = job.session_fields()
        session = self._sessions.get(key)
        if session is None:
            session = _hooks.make_session(*fields)
            self._sessions[key] = session
        else:  # what may have changed since: the user (login), TLS (STLS)
            session.user = fields[2]
            session.client_tls = fields[4]
        return session

    def _arguments(self, job: Any) -> tuple[Any, ...]:
        session = self._session(job)
        hook = job.hook
        if hook == "session_end":
            self._sessions.pop((job.plugin, job.session_id), None)
        if hook == "command":
            return (session, _hooks.make_command(*job.command_fields()))
        if hook == "message":
            return (session, job.message())
        if hook == "message_done":
            return (session, job.message(), _hooks.make_report(*job.report_fields()))
        return (session,)

    def _start(self, job: Any) -> None:
        """An ``async def`` hook, on the loop (sync ones come to ``call_sync``)."""
        plugin = self.plugins[job.plugin]
        try:
            args = self._arguments(job)
            fn = getattr(plugin, job.hook)
        except BaseException:  # noqa: BLE001
            self._failed(job, traceback.format_exc())
            return
        assert self._loop is not None
        self._loop.create_task(self._run_async(job, fn, args))

    def call_sync(self, job: Any, plugin: int, hook: str, session_id: int, user: str,
                  client_tls: bool, msg: Any) -> tuple[str, str] | None:
        """A sync hook, on one of popgate's sync-hook threads (GIL held), handed what it
        needs in one call (bindings/embedded.cc, RunSyncJob). Returns the answer, as
        (verdict, reason) for ``message``, (kind, text) for ``command``; None when the
        hook failed, which has been reported on the job. The timeout is watched in C++."""
        try:
            key = (plugin, session_id)
            session = self._sessions.get(key)
            if session is None:
                session = _hooks.make_session(*job.session_fields())
                self._sessions[key] = session
            else:  # what may have changed since: the user (login), TLS (STLS)
                session.user = user
                session.client_tls = client_tls
            fn = getattr(self.plugins[plugin], hook)
            if hook == "message":
                return _hooks.message_verdict(fn(session, msg))
            if hook == "command":
                return _hooks.command_decision(
                    fn(session, _hooks.make_command(*job.command_fields())))
            if hook == "message_done":
                fn(session, msg, _hooks.make_report(*job.report_fields()))
            else:
                if hook == "session_end":
                    self._sessions.pop(key, None)
                fn(session)
            return ("", "")
        except BaseException:  # noqa: BLE001
            self._failed(job, traceback.format_exc())
            return None

    async def _run_async(self, job: Any, fn: Any, args: tuple[Any, ...]) -> None:
        try:
            result = await asyncio.wait_for(fn(*args), job.timeout)
        except asyncio.TimeoutError:
            job.fail("timeout", "")
            return
        except BaseException:  # noqa: BLE001
            self._failed(job, traceback.format_exc())
            return
        try:
            self._answer(job, result, args)
        except BaseException:  # noqa: BLE001
            self._failed(job, traceback.format_exc())

    @staticmethod
    def _answer(job: Any, result: Any, args: tuple[Any, ...]) -> None:
        hook = job.hook
        if hook == "message":
            verdict, reason = _hooks.message_verdict(result)
            job.finish_message(verdict, reason, args[1])
        elif hook == "command":
            kind, text = _hooks.command_decision(result)
            job.finish_command(kind, text)
        else:
            job.finish()

    def _failed(self, job: Any, text: str) -> None:
        if job.ended:
            return  # timed out already: that was logged
        _popgate._log(_WARNING, f"python plugin {self.names[job.plugin]} raised in "
                                f"{job.hook}:\n{text.rstrip()}")
        job.fail("exception", _last_line(text))

    def _reload(self) -> None:
        specs = _popgate._reload_specs()
        reloaded = 0
        for position, (use, class_name, options) in enumerate(specs):
            try:
                index, needs, hooks, async_hooks = self.load(use, class_name, options)
            except RuntimeError as failure:
                _popgate._log(_ERROR, f"python plugin {use}: reload failed, the old code "
                                      f"stays:\n{failure}")
                continue
            _popgate._reloaded(position, index, needs, hooks, async_hooks)
            reloaded += 1
        _popgate._log(_INFO, f"python plugins reloaded: {reloaded} of {len(specs)}")

    def _retire(self, index: int) -> None:
        """A reload replaced this plugin and its last session is over."""
        plugin = self.plugins[index]
        self.plugins[index] = None
        if plugin is None or "done" not in _loader.hooks_of(plugin):
            return
        if _loader.is_async(plugin, "done"):
            assert self._loop is not None
            self._loop.create_task(self._call_done(index, plugin))
        else:  # off the loop: done() may block
            threading.Thread(target=self._call_done_sync, args=(index, plugin),
                             name="popgate-done", daemon=True).start()

    async def _call_done(self, index: int, plugin: Any) -> None:
        try:
            await asyncio.wait_for(plugin.done(), 30)
        except BaseException:  # noqa: BLE001
            _popgate._log(_WARNING, f"python plugin {self.names[index]} raised in done:\n"
                                    f"{traceback.format_exc().rstrip()}")

    def _call_done_sync(self, index: int, plugin: Any) -> None:
        try:
            plugin.done()
        except BaseException:  # noqa: BLE001
            _popgate._log(_WARNING, f"python plugin {self.names[index]} raised in done:\n"
                                    f"{traceback.format_exc().rstrip()}")

    async def _done(self) -> None:
        """done() of every plugin, at shutdown; each bounded like a hook (30 s)."""
        for index, plugin in enumerate(self.plugins):
            if plugin is None or "done" not in _loader.hooks_of(plugin):
                continue
            if _loader.is_async(plugin, "done"):
                await self._call_done(index, plugin)
            else:
                self._call_done_sync(index, plugin)
