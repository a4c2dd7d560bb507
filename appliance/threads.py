"""The daemon's threads and components: one base for the threads, one written contract for
the parts the daemon starts.

A thread (`Worker`): a name the kernel shows (`top -H`), a real-time priority taken when it
starts (every thread that takes the GIL runs SCHED_FIFO below the writer, or a CPU hog
preempts it while it holds the GIL and the writer waits: see the README), a loop that
runs until `halt()`, and an exception in one step logged without ending the loop (a
control thread must never die mid-show). Subclasses write `step()` (one pass of the
loop) or, when the loop keeps state of its own (the writer), `loop()`; `wakeup()` makes a
waiting loop look at `running` at once.

A component (`Component`): what the daemon starts from a config section (footswitches and
LED, MIDI, the hot-standby peer; OSC and the web remote next). The daemon hands its
factory `(cfg, daemon)`; from the daemon a component may use `daemon.act(action, source)`
(the one entry for every control), `daemon.engine` (status and engine events: listeners
are called under the engine lock, so only wake a thread there), `daemon.role` and
`daemon.peer`. It must offer `close()` (idempotent, never raises for an expected failure)
and may offer `status() -> dict`, merged into `ctl status` under "controls". A factory
that raises is reported and the show goes on without that part; a factory returning None
means "nothing to run" (the section asks for nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol, runtime_checkable

from .realtime import set_thread_fifo

log = logging.getLogger("backtrack")

ERROR_PAUSE_S = 0.01   # after a step that raised: no busy loop of errors


class Worker(threading.Thread):
    def __init__(self, name: str, priority: int = 0):
        super().__init__(name=name, daemon=True)
        self.priority = priority
        self.running = True
        self.rt_status = "not started"

    def run(self) -> None:
        self.rt_status = self.take_priority()
        try:
            self.loop()
        finally:
            self.finish()

    def take_priority(self) -> str:
        """SCHED_FIFO at `priority` (0: leave the thread as it is); returns what was granted."""
        return set_thread_fifo(self.priority)

    def loop(self) -> None:
        while self.running:
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a thread of the show must not die of one error
                log.exception("%s: error", self.name)
                time.sleep(ERROR_PAUSE_S)

    def step(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the loop, in the thread (close what the loop opened)."""

    def wakeup(self) -> None:
        """Make a loop that waits (on an event, a poll) look at `running` now."""

    def halt(self, timeout: float = 1.0) -> None:
        """Stop the loop and wait for the thread (not from the thread itself)."""
        self.running = False
        self.wakeup()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


@runtime_checkable
class Component(Protocol):
    """A part the daemon starts from a config section (see the module docstring)."""

    def close(self) -> None: ...
