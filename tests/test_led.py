"""The status LED: every state's pattern from the one table, read back from gpiozero's mock
pins (single PWM LED, on/off LED, RGB LED), and a daemon walking through the states."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from appliance.actions import Action
from appliance.config import Led
from appliance.controls.led import PATTERNS, StatusLed, led_state, steps_for
from tests.showkit import make_show, wait_for
from tests.test_gpio import inproc, mock_pins, wait_state  # noqa: F401 - fixtures

STATES = ("starting", "ready", "playing", "paused", "stopped", "standby", "unprotected",
          "error", "selftest_running", "selftest_pass", "selftest_fail")


class FakeEngine:
    def __init__(self):
        self.listeners = []
        self.writer = SimpleNamespace(periods_done=0)
        self.st = SimpleNamespace(state="cued", device="ok", problems=[], duration=0.0)

    def status(self):
        return self.st


def fake_daemon():
    return SimpleNamespace(engine=FakeEngine(), role="leader", peer=None,
                           selftest=SimpleNamespace(led=lambda: None))


def set_state(d, state: str) -> None:
    """Make the fake engine report what gives LED state `state`."""
    e = d.engine
    e.writer.periods_done = 0 if state == "starting" else 10
    e.st = SimpleNamespace(state="cued", device="ok", problems=[], duration=3.0)
    d.role = "leader"
    d.peer = None
    d.selftest = SimpleNamespace(led=lambda: None)  # what SelfTest.led() reports
    if state.startswith("selftest_"):
        d.selftest = SimpleNamespace(led=lambda: state.removeprefix("selftest_"))
    if state in ("playing", "paused", "stopped"):
        e.st.state = state
    elif state == "standby":
        d.role = "follower"
    elif state == "error":
        e.st.device = "device lost: No such device"
    elif state == "unprotected":
        d.role = "follower"
        d.peer = SimpleNamespace(protected=False)  # what PeerNode.protected reports
    for fn in list(e.listeners):
        fn("state", e)


def levels(steps) -> list[float]:
    """The cyclic sequence of levels with repeats merged (what a pin history shows)."""
    out = []
    for lv, _dur in steps:
        if not out or out[-1] != lv:
            out.append(lv)
    return out


def observed(pin, since: int) -> list[float]:
    vals = [round(float(s.state), 3) for s in pin.states[since:]]
    out = []
    for v in vals:
        if not out or out[-1] != v:
            out.append(v)
    return out


def cycle_s(steps) -> float:
    return sum(d for _l, d in steps)


def assert_shows(pin, since: int, steps) -> None:
    want = levels(steps)
    got = observed(pin, since)
    assert got, "the LED never changed"
    if len(want) == 1:
        assert got[-1] == pytest.approx(want[0]), got
        return
    # got is a rotation of the pattern repeated: find where it starts
    n = len(want)
    k = want.index(got[0]) if got[0] in want else -1
    assert k >= 0, (got, want)
    assert len(got) >= n, (got, want)
    for j, v in enumerate(got):
        assert v == pytest.approx(want[(k + j) % n]), (got, want)


# -- pure -------------------------------------------------------------------------------------

def test_every_state_has_one_distinct_pattern():
    assert set(PATTERNS) == set(STATES)
    for pwm in (True, False):
        shapes = {s: steps_for(s, pwm) for s in STATES}
        assert len(set(shapes.values())) == len(STATES), "two states look alike"
        if not pwm:
            for st in shapes.values():
                assert all(lv in (0.0, 1.0) for lv, _d in st), "dimming needs PWM"


def test_led_state_priorities():
    assert led_state("playing", True, False, "leader", False) == "starting"
    assert led_state("playing", False, False, "leader", True) == "error"
    assert led_state("cued", True, True, "follower", True) == "error"     # trouble first
    assert led_state("playing", True, False, "follower", True) == "standby"
    assert led_state("cued", True, False, "leader", True) == "ready"
    assert led_state("stopped", True, False, "leader", True) == "stopped"
    assert led_state("cued", True, False, "starting", True) == "starting"    # peer listening
    # a pair that does not protect says so on leader and follower alike, below trouble
    assert led_state("playing", True, False, "leader", True, False) == "unprotected"
    assert led_state("cued", True, False, "follower", True, False) == "unprotected"
    assert led_state("cued", True, False, "follower", True, True) == "standby"
    assert led_state("playing", True, False, "leader", True, True) == "playing"
    assert led_state("cued", False, False, "follower", True, False) == "error"


# -- gpiozero mock pins -------------------------------------------------------------------------

def test_single_pwm_led_shows_each_state(mock_pins):  # noqa: F811
    d = fake_daemon()
    led = StatusLed(Led(pin=22, pwm=True), d)
    led.start()
    pin = mock_pins.pin(22)
    try:
        for state in STATES:
            set_state(d, state)
            wait_for(lambda s=state: led.state == s, 3, state)
            since = len(pin.states)
            steps = steps_for(state, True)
            time.sleep(min(cycle_s(steps), 2.0) + 0.3 if len(steps) > 1 else 0.3)
            assert_shows(pin, since - 1, steps)
        assert led.history == list(STATES)
    finally:
        led.close()
    assert pin.state == 0


def test_on_off_led_and_rgb_led(mock_pins):  # noqa: F811
    d = fake_daemon()
    led = StatusLed(Led(pin=22, pwm=False), d)
    rgb = StatusLed(Led(rgb=(5, 6, 13), pwm=True), d)
    led.start()
    rgb.start()
    pin = mock_pins.pin(22)
    r, g, b = (mock_pins.pin(n) for n in (5, 6, 13))
    try:
        set_state(d, "standby")     # dim on PWM: two flashes without
        wait_for(lambda: led.state == "standby", 3)
        since = len(pin.states)
        time.sleep(cycle_s(steps_for("standby", False)) + 0.3)
        assert_shows(pin, since - 1, steps_for("standby", False))
        assert (r.state, g.state, b.state) == pytest.approx((0.0, 0.09, 0.15))
        set_state(d, "playing")
        wait_for(lambda: rgb.state == "playing", 3)
        time.sleep(0.1)
        assert (r.state, g.state, b.state) == (0, 1, 0) and pin.state == 1
        set_state(d, "error")
        wait_for(lambda: rgb.state == "error", 3)
        seen = set()
        t_end = time.monotonic() + 1.2
        while time.monotonic() < t_end:
            seen.add((r.state, g.state, b.state))
            time.sleep(0.005)
        assert seen == {(1, 0, 0), (0, 0, 0)}
    finally:
        led.close()
        rgb.close()


def test_a_broken_status_read_keeps_the_led_alive(mock_pins):  # noqa: F811
    d = fake_daemon()
    led = StatusLed(Led(pin=22), d)
    set_state(d, "playing")
    led.start()
    try:
        wait_for(lambda: led.state == "playing", 3)
        d.engine.status = lambda: 1 / 0
        time.sleep(0.5)
        assert led.is_alive() and led.state == "playing"
    finally:
        led.close()


# -- a real daemon ----------------------------------------------------------------------------

def test_daemon_led_follows_the_show(mock_pins, inproc, tmp_path):  # noqa: F811
    show = make_show(tmp_path, [2.0, 1.0], extra="led: {pin: 22}\n")
    (tmp_path / "s2_click.wav").unlink()          # song 2 has a missing stem
    d = inproc(show.config)
    led = d.components[0].led
    wait_for(lambda: led.state == "ready", 10, "ready")
    d.act(Action("play"), "test")
    wait_for(lambda: led.state == "playing", 3, "playing")
    d.act(Action("pause"), "test")
    wait_for(lambda: led.state == "paused", 3, "paused")
    d.role = "follower"
    wait_for(lambda: led.state == "standby", 3, "standby")
    d.role = "leader"
    d.act(Action("next"), "test")                  # paused: song 2 is cued, and it is broken
    wait_for(lambda: led.state == "error", 3, "error")
    d.act(Action("play"), "test")                  # it plays (what is there) to the end of set
    wait_state(d, "stopped", timeout=10)
    wait_for(lambda: led.state == "stopped", 3, "stopped")
    pin = mock_pins.pin(22)
    since = len(pin.states)
    time.sleep(2.3)
    assert_shows(pin, since - 1, steps_for("stopped", True))
    h = led.history
    assert h[0] == "starting" and h[-1] == "stopped"
    assert d.components[0].status() == {"led": "stopped", "footswitch_last": None}
    for a, b in zip(["ready", "playing", "paused", "standby", "error"], h[1:6], strict=True):
        assert a == b, h
