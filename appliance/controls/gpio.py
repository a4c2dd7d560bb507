"""Footswitches on GPIO (gpiozero Buttons) and the status LED: config -> `daemon.act`.

Why it is built this way:

- Debounce is a lock-out, not a settle time: the first edge counts at once and edges in
  the next `bounce_ms` are ignored, so a press reaches the transport with no added delay
  (gpiozero's own `bounce_time` on lgpio waits for the level to settle first, which is
  `bounce_ms` of latency on every press). When the contacts settle on the other level
  than the one accepted (a tap shorter than `bounce_ms`), that level is taken at the end
  of the lock-out, so a short tap is never mistaken for a hold.
- press / hold / double-press is a small state machine (`SwitchLogic`) with the time passed
  in, tested without sleeping. `press` fires on the press edge when the switch has neither
  `hold` nor `double` (lowest latency: that is the usual play switch); with `hold` it fires
  on release before `hold_time` (holding must not start the song first); with `double` it
  fires once `double_ms` has passed without a second press.
- gpiozero callbacks run in its pin thread (lgpio's on a Pi): they only timestamp and queue
  the edge; one thread of ours runs the logic and calls `daemon.act`, so a slow command
  never delays the timestamp of the next edge.
- The pin factory is gpiozero's choice (lgpio on a Pi 4/5), or `GPIOZERO_PIN_FACTORY=mock`,
  or one passed in (tests use `MockFactory`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..actions import Action
from ..config import Config, Footswitch
from ..threads import Worker

log = logging.getLogger("backtrack.gpio")

IDLE, DOWN, UP_WAIT, DONE = "idle", "down", "up_wait", "done"


class SwitchLogic:
    """One footswitch: raw edges and the passing of time in, actions out. No I/O.

    Phases: `idle`; `down` (pressed, not yet decided); `up_wait` (released, a second press
    would make a double); `done` (this gesture has fired, waiting for the release)."""

    def __init__(self, fs: Footswitch, pressed: bool = False):
        self.press, self.hold, self.double = fs.press, fs.hold, fs.double
        self.hold_s = fs.hold_time
        self.bounce_s = (fs.bounce_ms or 0.0) / 1000.0
        self.double_s = fs.double_ms / 1000.0
        self.raw = self.level = pressed
        self.lock_until = float("-inf")
        # a switch already held when the daemon starts fires nothing until released
        self.phase = DONE if pressed else IDLE
        self.t0 = 0.0

    def edge(self, pressed: bool, now: float) -> list[Action]:
        """A raw edge from the pin (bounces included)."""
        out = self.poll(now)
        self.raw = pressed
        if now < self.lock_until or pressed == self.level:
            return out
        return out + [a for a in self._accept(pressed, now) if a is not None]

    def poll(self, now: float) -> list[Action]:
        """Time passed: the end of a lock-out, a hold, a double-press window."""
        out: list[Action | None] = []
        if self.raw != self.level and now >= self.lock_until:
            out += self._accept(self.raw, self.lock_until)
        if self.phase == DOWN:
            if self.hold is not None and now >= self.t0 + self.hold_s:
                self.phase = DONE
                out.append(self.hold)
            elif self.hold is None and self.double is not None and now > self.t0 + self.double_s:
                self.phase = DONE          # still down: no second press can come in time
                out.append(self.press)
        elif self.phase == UP_WAIT and now > self.t0 + self.double_s:
            self.phase = IDLE
            out.append(self.press)
        return [a for a in out if a is not None]

    def deadline(self) -> float | None:
        """When `poll` may next have something to do (None: only an edge can change it)."""
        cands = []
        if self.raw != self.level:
            cands.append(self.lock_until)
        if self.phase == DOWN:
            if self.hold is not None:
                cands.append(self.t0 + self.hold_s)
            elif self.double is not None:
                cands.append(self.t0 + self.double_s + 1e-6)
        elif self.phase == UP_WAIT:
            cands.append(self.t0 + self.double_s + 1e-6)
        return min(cands) if cands else None

    def _accept(self, pressed: bool, t: float) -> list[Action | None]:
        self.level = pressed
        self.lock_until = t + self.bounce_s
        if pressed:
            if self.phase == UP_WAIT and t - self.t0 <= self.double_s:
                self.phase = DONE
                return [self.double]
            self.t0 = t
            if self.hold is None and self.double is None:
                self.phase = DONE
                return [self.press]
            self.phase = DOWN
            return []
        if self.phase == DOWN:
            if self.double is not None and t - self.t0 <= self.double_s:
                self.phase = UP_WAIT
                return []
            self.phase = IDLE
            return [self.press]
        if self.phase == DONE:
            self.phase = IDLE
        return []


class Footswitches(Worker):
    """gpiozero Buttons (pull-up, active low) feeding `SwitchLogic`s from one thread."""

    def __init__(self, switches: tuple[Footswitch, ...], act: Callable[[Action, str], object],
                 pin_factory=None, clock: Callable[[], float] = time.monotonic,
                 rt_priority: int = 0):
        super().__init__("backtrack-footswitch", rt_priority)
        from gpiozero import Button

        self.act = act
        self.clock = clock
        self.queue: deque = deque(maxlen=256)
        self.wake = threading.Event()
        self.fired: list[tuple[int, Action, float]] = []  # (switch, action, time): status/tests
        self.buttons = []
        self.logic: list[SwitchLogic] = []
        try:
            for i, fs in enumerate(switches):
                # bounce and hold are SwitchLogic's: gpiozero only reports raw edges
                b = Button(fs.pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
                self.buttons.append(b)
                self.logic.append(SwitchLogic(fs, pressed=bool(b.is_pressed)))
                b.when_pressed = lambda i=i: self._edge(i, True)
                b.when_released = lambda i=i: self._edge(i, False)
        except Exception:
            self._close_buttons()
            raise

    def _edge(self, i: int, pressed: bool) -> None:
        self.queue.append((i, pressed, self.clock()))
        self.wake.set()

    def step(self) -> None:
        deadlines = [d for d in (lg.deadline() for lg in self.logic) if d is not None]
        timeout = 1.0
        if deadlines:
            timeout = max(0.0, min(min(deadlines) - self.clock(), 1.0))
        self.wake.wait(timeout)
        self.wake.clear()
        try:
            while self.queue:
                i, pressed, t = self.queue.popleft()
                self._fire(i, self.logic[i].edge(pressed, t))
            now = self.clock()
            for i, lg in enumerate(self.logic):
                self._fire(i, lg.poll(now))
        except Exception:  # noqa: BLE001 - a footswitch fault must not end the thread
            log.exception("footswitch")

    def wakeup(self) -> None:
        self.wake.set()

    def _fire(self, i: int, actions: list[Action]) -> None:
        for a in actions:
            self.fired.append((i, a, self.clock()))
            del self.fired[:-64]
            try:
                self.act(a, "footswitch")
            except Exception:  # noqa: BLE001
                log.exception("footswitch %d: %s failed", i + 1, a)

    def _close_buttons(self) -> None:
        for b in self.buttons:
            try:
                b.close()
            except Exception:  # noqa: BLE001
                log.debug("button close", exc_info=True)

    def close(self) -> None:
        self.halt(timeout=3)
        self._close_buttons()


class GpioControls:
    """What `start` returns: the footswitches and the status LED, each optional."""

    def __init__(self, switches: Footswitches | None, led):
        self.switches, self.led = switches, led

    def status(self) -> dict:
        """For `backtrack ctl status`: the LED state shown and the last footswitch action."""
        last = self.switches.fired[-1] if self.switches and self.switches.fired else None
        return {
            "led": self.led.state if self.led else None,
            "footswitch_last": f"{last[0] + 1}: {last[1]}" if last else None,
        }

    def any_held(self) -> bool:
        """A footswitch is down now: at start, that asks for the self-test (a band that
        turned `selftest.at_start` off holds a switch while the box boots)."""
        if self.switches is None:
            return False
        try:
            return any(b.is_pressed for b in self.switches.buttons)
        except Exception:  # noqa: BLE001 - a pin read is never worth a failed start
            return False

    def close(self) -> None:
        for part in (self.switches, self.led):
            if part is None:
                continue
            try:
                part.close()
            except Exception:  # noqa: BLE001
                log.exception("closing %r", part)


def start(cfg: Config, daemon, pin_factory=None) -> GpioControls | None:
    """Called by the daemon when `footswitches` or `led` is configured. A part that cannot
    start (pin busy, no GPIO chip) is logged and the other part still runs."""
    from .led import StatusLed

    switches = led = None
    errors: list[Exception] = []
    if cfg.footswitches:
        try:
            switches = Footswitches(cfg.footswitches, daemon.act, pin_factory,
                                    rt_priority=max(0, cfg.engine.realtime_priority - 15))
            switches.start()
            log.info("footswitches on GPIO %s", ", ".join(str(f.pin) for f in cfg.footswitches))
        except Exception as exc:  # noqa: BLE001
            log.error("footswitches not started: %s", exc)
            errors.append(exc)
    if cfg.led is not None:
        try:
            led = StatusLed(cfg.led, daemon, pin_factory)
            led.start()
        except Exception as exc:  # noqa: BLE001
            log.error("status LED not started: %s", exc)
            errors.append(exc)
    if switches is None and led is None and errors:
        raise errors[0]
    return GpioControls(switches, led)


__all__ = ["Footswitches", "GpioControls", "SwitchLogic", "start"]
