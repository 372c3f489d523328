"""Graceful stop on SIGTERM/SIGINT: the first signal asks the loop to stop, a second aborts at once."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingAborted(BaseException):  # noqa: N818 - BaseException so no `except Exception` swallows it
    """A second signal arrived: leave now; the previous checkpoint on disk stays valid."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"aborted by a second {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """Context manager: while active, SIGTERM/SIGINT set `requested` instead of killing the process.

    The training loop polls `requested` between iterations, finishes the one in flight, saves and
    exits cleanly. A second signal raises TrainingAborted wherever the process is (a save in
    progress is abandoned; atomic writes leave the last complete file in place).
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise TrainingAborted(signum)
        self.requested = signal.Signals(signum).name
        log.warning(
            "%s received: finishing the current iteration, then saving (again to abort)", self.requested
        )

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be installed from the main thread; elsewhere run without them.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
