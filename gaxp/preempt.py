"""Preemption: SIGTERM or SIGINT ends a run cleanly at the next step boundary.

The signal only sets a flag; the loop checks it after each step, writes a checkpoint (waiting for
the asynchronous save), flushes the logs and W&B, and raises ``Preempted`` with the command that
resumes the run. A second signal while that happens stops at once (default behaviour). On a
multi-process run the processes must stop at the same step, so JAX's preemption sync point (the
coordination service watches SIGTERM itself) decides there instead of a local flag.
"""

from __future__ import annotations

import signal
import threading

import jax

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}
        self._multi = jax.process_count() > 1

    def __enter__(self) -> "StopRequests":
        if not self._multi and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def requested(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils

            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signum = signal.SIGTERM
            except RuntimeError:  # no preemption service (jax.distributed not initialized)
                pass
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
