"""What every private daemon of the tests (spamd, clamd, rspamd) shares: `with X() as x:`
starts it and, however the block ends, or if starting fails half-way, stops it by its
process id and removes its directory."""

from __future__ import annotations

from typing import TypeVar

_S = TypeVar("_S", bound="PrivateService")


class PrivateService:
    def start(self: _S) -> _S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        try:
            self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
