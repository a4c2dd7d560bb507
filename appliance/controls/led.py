"""The status LED: one glance from across the stage says ready, playing, or trouble.

Every pattern is in `PATTERNS` below (docs/controls.md shows the same table); nothing else
decides how the LED looks. `led_state` picks the state from the engine's status, a thread
plays the pattern's steps on a gpiozero LED, PWMLED or RGBLED. A single LED tells states
apart by rhythm alone; an RGB LED adds a colour to the same rhythm, so the patterns stay
readable for the colour-blind and in stage light.

The state is re-read on every engine event (command, song end, device lost) and at least
every `POLL_S`, so a missing stem or a lost device shows within a fraction of a second.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..config import Led
from ..threads import Worker

log = logging.getLogger("backtrack.led")

POLL_S = 0.2
STARTING_MAX_S = 15.0   # "starting" gives way to what is wrong after this long
SILENT_ROLES = ("follower", "standby")

Steps = tuple[tuple[float, float], ...]  # (brightness 0..1, seconds); one step: steady

WHITE, GREEN, AMBER, BLUE, CYAN, RED = ((1.0, 1.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.6, 0.0),
                                        (0.0, 0.0, 1.0), (0.0, 0.6, 1.0), (1.0, 0.0, 0.0))


@dataclass(frozen=True)
class Pattern:
    meaning: str
    color: tuple[float, float, float]     # RGB LED only
    steps: Steps
    onoff: Steps | None = None            # for a LED without PWM when `steps` dims


def _flash(times: int, on: float, off: float, rest: float) -> Steps:
    steps: list[tuple[float, float]] = []
    for k in range(times):
        steps += [(1.0, on), (0.0, rest if k == times - 1 else off)]
    return tuple(steps)


PATTERNS: dict[str, Pattern] = {
    "starting": Pattern("the daemon is starting (device opening, first song loading)",
                        WHITE, ((1.0, 0.1), (0.0, 0.1))),
    "ready": Pattern("a song is cued at its start: play starts it", GREEN,
                     ((1.0, 1.0), (0.0, 1.0))),
    "playing": Pattern("a song is playing", GREEN, ((1.0, 0.0),)),
    "paused": Pattern("paused mid-song: play (or pause) resumes", AMBER,
                      ((1.0, 0.25), (0.0, 0.25))),
    "stopped": Pattern("the set has ended: next cues song 1, goto N any song", BLUE,
                       ((1.0, 0.1), (0.0, 1.9))),
    "standby": Pattern("hot-standby follower, locked and ready to take over", CYAN,
                       ((0.15, 0.0),), onoff=_flash(2, 0.1, 0.2, 1.6)),
    "unprotected": Pattern("a unit of a hot-standby pair, and the show is NOT protected: no "
                           "follower locked and ready to take over (leader and follower alike; "
                           "`backtrack ctl status` says why: peer.why_not)", AMBER,
                           ((1.0, 1.2), (0.0, 0.15), (1.0, 0.15), (0.0, 0.5))),
    "error": Pattern("trouble: the sound card is lost, or a stem of this song is missing "
                     "or unreadable (see `backtrack ctl status`)", RED,
                     _flash(3, 0.07, 0.07, 0.8)),
    "selftest_running": Pattern("the self-test is running (at start, a footswitch hold or "
                                "`backtrack check --live`)", WHITE,
                                ((1.0, 0.05), (0.0, 0.05), (1.0, 0.05), (0.0, 0.35))),
    "selftest_pass": Pattern("the self-test passed (shown for 5 s, while no song plays)", GREEN,
                             ((1.0, 0.6), (0.0, 0.1), (1.0, 0.6), (0.0, 0.1),
                              (1.0, 0.6), (0.0, 0.6))),
    "selftest_fail": Pattern("the self-test FAILED: `backtrack ctl status` (selftest.faults) "
                             "names each fault; shown while no song plays, until a song starts "
                             "or a self-test passes", RED,
                             ((1.0, 0.6), (0.0, 0.15), (1.0, 0.07), (0.0, 0.15), (1.0, 0.07),
                              (0.0, 0.8))),
}

_SELFTEST_TO_LED = {"running": "selftest_running", "pass": "selftest_pass",
                    "fail": "selftest_fail"}

_TRANSPORT_TO_LED = {"playing": "playing", "paused": "paused", "stopped": "stopped",
                     "cued": "ready"}


def led_state(transport_state: str, device_ok: bool, problems: bool, role: str,
              started: bool, protected: bool | None = None,
              selftest: str | None = None) -> str:
    """Trouble first (it is what the band must see), then a pair that does not protect,
    then the self-test's verdict (only while no song plays: running, pass, fail;
    appliance.selftest), then standby, then the transport. `problems` are those of the song at hand
    (cued, playing, paused); once the set has ended no song is at hand. `protected`: None on
    a unit without a peer."""
    if not started:
        return "starting"
    if not device_ok or (problems and transport_state != "stopped"):
        return "error"
    if role == "starting":      # a peer listening for a leader before it may be heard
        return "starting"
    if protected is False:
        return "unprotected"
    if selftest in _SELFTEST_TO_LED and transport_state not in ("playing", "paused"):
        return _SELFTEST_TO_LED[selftest]
    if role in SILENT_ROLES:
        return "standby"
    return _TRANSPORT_TO_LED.get(transport_state, "ready")


def steps_for(state: str, pwm: bool) -> Steps:
    p = PATTERNS[state]
    if not pwm and p.onoff is not None:
        return p.onoff
    return p.steps


class StatusLed(Worker):
    """Plays the pattern of the daemon's current state on the configured LED."""

    def __init__(self, cfg: Led, daemon, pin_factory=None):
        ecfg = getattr(daemon.engine, "cfg", None)
        super().__init__("backtrack-led",
                         max(0, ecfg.engine.realtime_priority - 20) if ecfg else 0)
        from gpiozero import LED, PWMLED, RGBLED

        self.daemon_ = daemon
        self.rgb = cfg.rgb is not None
        self.pwm = cfg.pwm
        try:
            if self.rgb:
                self.device = RGBLED(*cfg.rgb, pwm=cfg.pwm, pin_factory=pin_factory)
            elif cfg.pwm:
                self.device = PWMLED(cfg.pin, pin_factory=pin_factory)
            else:
                self.device = LED(cfg.pin, pin_factory=pin_factory)
        except Exception as exc:  # noqa: BLE001 - e.g. a pin factory without PWM
            if not cfg.pwm:
                raise
            log.warning("LED without PWM (%s): on/off patterns", exc)
            self.pwm = False
            if self.rgb:
                self.device = RGBLED(*cfg.rgb, pwm=False, pin_factory=pin_factory)
            else:
                self.device = LED(cfg.pin, pin_factory=pin_factory)
        self.state = "starting"
        self.t_start = time.monotonic()
        self._is_up = False
        self.history: list[str] = ["starting"]   # states shown, in order (status, tests)
        self.wake = threading.Event()
        self._value = None
        daemon.engine.listeners.append(self.on_engine)

    def on_engine(self, _event: str, _engine) -> None:
        self.wake.set()      # under the engine lock: only wake the LED thread

    def evaluate(self) -> str:
        engine = self.daemon_.engine
        st = engine.status()
        if not self._is_up:
            # the writer has run and the cued song is loaded (its length or its problems known)
            loaded = st.duration > 0 or bool(st.problems)
            self._is_up = (getattr(engine.writer, "periods_done", 1) > 0 and loaded
                             or time.monotonic() - self.t_start > STARTING_MAX_S)
        peer = getattr(self.daemon_, "peer", None)
        test = getattr(self.daemon_, "selftest", None)
        return led_state(st.state, st.device == "ok", bool(st.problems),
                         getattr(self.daemon_, "role", "leader"), self._is_up,
                         peer.protected if peer is not None else None,
                         test.led() if test is not None else None)

    def loop(self) -> None:
        step = 0
        step_end = 0.0
        while self.running:
            try:
                new = self.evaluate()
            except Exception:  # noqa: BLE001 - keep blinking what we had
                log.exception("LED state")
                new = self.state
            now = time.monotonic()
            if new != self.state:
                log.info("LED: %s", new)
                self.state = new
                self.history.append(new)
                del self.history[:-64]
                step, step_end = 0, 0.0
            steps = steps_for(self.state, self.pwm)
            if now >= step_end:
                if step_end:
                    step = (step + 1) % len(steps)
                level, dur = steps[step]
                self._show(level)
                step_end = now + dur if dur > 0 else float("inf")
            self.wake.wait(max(0.0, min(step_end - time.monotonic(), POLL_S)))
            self.wake.clear()

    def finish(self) -> None:
        self._show(0.0)

    def wakeup(self) -> None:
        self.wake.set()

    def _show(self, level: float) -> None:
        if self.rgb:
            c = PATTERNS[self.state].color
            value = tuple(x * level for x in c)
            if not self.pwm:
                value = tuple(1 if x >= 0.5 else 0 for x in value)
        else:
            value = level if self.pwm else (1 if level >= 0.5 else 0)
        if value == self._value:
            return
        try:
            self.device.value = value
            self._value = value
        except Exception:  # noqa: BLE001
            log.exception("LED write")

    def close(self) -> None:
        self.running = False
        try:
            self.daemon_.engine.listeners.remove(self.on_engine)
        except ValueError:
            pass
        self.halt(timeout=3)
        try:
            self.device.value = (0, 0, 0) if self.rgb else 0
            self.device.close()
        except Exception:  # noqa: BLE001
            log.debug("LED close", exc_info=True)


__all__ = ["PATTERNS", "Pattern", "StatusLed", "led_state", "steps_for"]
