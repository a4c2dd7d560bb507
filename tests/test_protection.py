"""A standby pair that protects by default (issue 10), with real daemons: two units set up
the obvious way (the follower's priority left out, no timeout given) protect the show,
say so, and take over; each way of not protecting is named in status and on the LED of
both units; a lossy, jittery link causes no takeover from a live leader."""

from __future__ import annotations

import time

import pytest

from appliance.peer import wire
from tests.jackaudio import judged
from tests.lossylink import LossyLink
from tests.showkit import DaemonProcess, free_port, make_show, wait_for


def peer(role: str, me: int, other: int, key, extra: str = "") -> str:
    """The obvious config: no priority, no timeout, no heartbeat: the defaults."""
    return (f"peer: {{role: {role}, listen: '127.0.0.1:{me}', peers: ['127.0.0.1:{other}'], "
            f"key_file: {key}{extra}}}\n")


def keyfile(path):
    path.write_text(wire.generate_key())
    path.chmod(0o600)
    return path


def default_pair(tmp_path, a_extra="", b_extra="", b_seconds=(20.0,), led=False,
                 ports=None, peers=None, b_key=None, a_seconds=(20.0,), key=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = key or keyfile(tmp_path / "peer.key")
    pa, pb = ports or (free_port(), free_port())
    to_a, to_b = peers or (pa, pb)
    leds = "led: {pin: 22}\n" if led else ""
    a = make_show(tmp_path / "a", list(a_seconds), extra=leds + peer("leader", pa, to_b, key, a_extra))
    b = make_show(tmp_path / "b", list(b_seconds),
                  extra=leds + peer("follower", pb, to_a, b_key or key, b_extra))
    return a, b


def causes(st: dict) -> list[str]:
    return [w.split(":")[0] for w in st["peer"]["why_not"]]


def led_of(st: dict) -> str:
    return st["controls"]["led"]


def test_obvious_pair_is_protected_and_takes_over_fast(jack_audio_factory, tmp_path):
    """The follower's priority left out (as a new user does): the units get their own ids,
    both say the show is protected (status, LED, journal), and a kill -9 of the leader is
    taken over with the default (learned) timeout."""
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    sa, sb = default_pair(tmp_path, led=True)
    env_a = ja.environ(GPIOZERO_PIN_FACTORY="mock")
    env_b = jb.environ(GPIOZERO_PIN_FACTORY="mock")
    with DaemonProcess(sa, env_a) as a, DaemonProcess(sb, env_b) as b, judged(ja, jb):
        wait_for(lambda: a.status()["role"] == "leader", timeout=5)
        a.ctl("play")
        wait_for(lambda: b.status()["peer"]["locked"], timeout=20)
        wait_both_protected(a, b)
        wait_for(lambda: led_of(a.status()) == "playing" and led_of(b.status()) == "standby",
                 timeout=3)
        sas, sbs = a.status(), b.status()
        time.sleep(1.0)
        a.proc.kill()  # kill -9, mid-song
        wait_for(lambda: b.status()["role"] == "leader", timeout=3)
        time.sleep(0.5)
        after = b.status()
    ra, rb = ja.stop(), jb.stop()
    assert sas["peer"]["unit"] != sbs["peer"]["unit"], "the two units share an id"
    assert sas["peer"]["priority"] == sbs["peer"]["priority"] == 1
    assert sas["peer"]["why_not"] == [] and sbs["peer"]["why_not"] == []
    assert led_of(sas) == "playing" and led_of(sbs) == "standby"
    assert "show protected" in a.log() and "show protected" in b.log()
    # the default detector learned the quiet loopback link: well under the start value
    assert sbs["peer"]["detector"]["learned"] and sbs["peer"]["timeout_ms"] < 60, sbs["peer"]
    assert after["state"] == "playing" and after["song"] == 1
    with judged(ra, rb):
        last_a, first_b = ra.last_nonsilent(), rb.first_nonsilent()
        assert last_a is not None and first_b is not None
        gap_ms = (rb.time_of_frame(first_b) - ra.time_of_frame(last_a)) / 1e6
        print(f"takeover gap {gap_ms:.1f} ms with timeout {sbs['peer']['timeout_ms']} ms")
        assert gap_ms < 60, f"gap {gap_ms:.1f} ms"  # sanity bound; the figure is in bench/


def wait_both_protected(a: DaemonProcess, b: DaemonProcess, timeout: float = 10.0) -> None:
    """On a timeout the error carries each unit's peer status and log tail: a pair that
    does not come up under load must say which unit was not ready, and why."""
    try:
        wait_for(lambda: a.status()["peer"]["protected"] and b.status()["peer"]["protected"],
                 timeout=timeout, what="both units protected")
    except AssertionError as e:
        seen = []
        for name, d in (("a", a), ("b", b)):
            try:
                seen.append(f"{name}: {d.status()['peer']}\n{d.log()[-1500:]}")
            except Exception as why:  # noqa: BLE001 - a diagnostic, never the failure itself
                seen.append(f"{name}: no status ({why})")
        raise AssertionError(f"{e}\n" + "\n".join(seen)) from None


def wait_cause(d: DaemonProcess, cause: str, timeout: float = 15.0) -> dict:
    seen: list[dict] = []

    def named() -> dict | bool:
        s = d.status()
        seen[:] = [s["peer"]]
        return s["peer"]["protected"] is False and cause in causes(s) and s
    try:
        return wait_for(named, timeout=timeout, what=f"cause {cause!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last peer status: {seen}") from None


def test_configured_id_clash_is_refused_loudly(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    sa, sb = default_pair(tmp_path, a_extra=", id: 7", b_extra=", id: 7", led=True)
    env_a = ja.environ(GPIOZERO_PIN_FACTORY="mock")
    env_b = jb.environ(GPIOZERO_PIN_FACTORY="mock")
    with DaemonProcess(sa, env_a) as a, DaemonProcess(sb, env_b) as b:
        st_a = wait_cause(a, "id clash")
        st_b = wait_cause(b, "id clash")
        wait_for(lambda: led_of(a.status()) == "unprotected"
                 and led_of(b.status()) == "unprotected", timeout=5)
    assert st_b["peer"]["packets"]["dropped"]["id-clash"] > 0
    assert "show NOT protected: id clash" in b.log() and "peer.id" in b.log()
    assert "show NOT protected" in a.log()
    assert st_a["peer"]["unit"] == st_b["peer"]["unit"] == 7


def test_a_random_id_met_by_its_twin_is_drawn_again(jack_audio_factory, tmp_path):
    """The follower (no peer.id) starts alone and draws an id; the leader is then started
    configured with that very id. The leader keeps its configured id, the follower draws
    another, says so, and the pair protects the show."""
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    ports = free_port(), free_port()
    _, sb = default_pair(tmp_path / "first", ports=ports)
    with DaemonProcess(sb, jb.environ()) as b:
        twin = b.status()["peer"]["unit"]
        sa, _ = default_pair(tmp_path / "then", a_extra=f", id: {twin}", ports=ports,
                             key=tmp_path / "first" / "peer.key")
        with DaemonProcess(sa, ja.environ()) as a:
            wait_both_protected(a, b)
            ua, ub = a.status()["peer"]["unit"], b.status()["peer"]["unit"]
    assert ua == twin and ub != twin and 1 <= ub <= 65535
    assert f"another unit used unit id {twin}: this unit is now id {ub}" in b.log()


def test_key_mismatch_is_named(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    other = keyfile(tmp_path / "other.key")
    sa, sb = default_pair(tmp_path, b_key=other)
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        st_a = wait_cause(a, "key mismatch")
        st_b = wait_cause(b, "key mismatch")
    assert st_a["peer"]["packets"]["dropped"]["hmac"] > 0
    assert "peer never heard" in causes(st_b)
    assert "show NOT protected: key mismatch" in a.log()


def test_setlist_mismatch_is_named_on_both(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    sa, sb = default_pair(tmp_path, b_seconds=(20.0, 5.0))   # another show: a song more
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        st_b = wait_cause(b, "setlist mismatch")
        st_a = wait_cause(a, "setlist mismatch")
        # the cause is reported after a second's hold; the live flag is read at another
        # instant, so it is waited for, not sampled (seen once in CI under load: False)
        wait_for(lambda: b.status()["peer"]["setlist_mismatch"], timeout=5,
                 what="the follower's live setlist-mismatch flag")
    assert "setlist mismatch" in causes(st_b) and st_b["role"] == "follower"
    assert any("unit" in w for w in st_a["peer"]["why_not"])


def test_peer_never_heard_is_named(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    nowhere = free_port(), free_port()   # both units send where nobody listens
    sa, sb = default_pair(tmp_path, peers=nowhere)
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        st_a = wait_cause(a, "peer never heard")
        st_b = wait_cause(b, "peer never heard")
    assert st_a["peer"]["packets"]["accepted"] == 0 == st_b["peer"]["packets"]["accepted"]


def test_follower_not_locked_is_named_on_both(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=40)
    jb = jack_audio_factory(seconds=40)
    sa, sb = default_pair(tmp_path)
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_for(lambda: b.status()["peer"]["protected"], timeout=10)
        b.ctl({"cmd": "_fault", "join": False})   # it hears the leader play, cannot join
        a.ctl("play")
        st_b = wait_cause(b, "follower not locked")
        st_a = wait_cause(a, "follower not locked")
        b.ctl({"cmd": "_fault", "join": True})
        wait_both_protected(a, b, timeout=20)
    assert st_b["state"] == "cued" and st_a["state"] == "playing"
    assert "show protected" in b.log().split("follower not locked")[-1]


def test_follower_without_a_device_is_named_on_both(jack_audio_factory, tmp_path):
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    sa, sb = default_pair(tmp_path)
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_for(lambda: b.status()["peer"]["protected"], timeout=10)
        jb.server.kill()  # the follower's interface vanishes
        st_b = wait_cause(b, "follower without a device")
        st_a = wait_cause(a, "follower without a device")
    assert st_b["device"] != "ok" and st_a["role"] == "leader"


def test_lossy_jittery_link_no_false_takeover_and_a_real_kill_still_taken(
        jack_audio_factory, tmp_path):
    """5 % loss and 5 +/- 5 ms delay each way (tests.lossylink: the kernel here has no
    netem). 40 s of a playing leader: no takeover; the detector learned a longer timeout
    than on a quiet link. Then kill -9: the follower takes over."""
    ja = jack_audio_factory(seconds=70)
    jb = jack_audio_factory(seconds=70)
    pa, pb, ra_, rb_ = free_port(), free_port(), free_port(), free_port()
    # A names the relay's A side (ra_) as its peer, B the relay's B side (rb_)
    sa, sb = default_pair(tmp_path, ports=(pa, pb), peers=(rb_, ra_), a_seconds=(60.0,),
                          b_seconds=(60.0,))
    with LossyLink(ra_, rb_, pa, pb, loss=0.05, jitter_ms=5.0, seed=3) as link, \
            DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_for(lambda: a.status()["role"] == "leader", timeout=5)
        wait_for(lambda: b.status()["peer"]["leader"] is not None, timeout=10)
        a.ctl("play")
        term = b.status()["peer"]["term"]
        checks = []
        t_end = time.monotonic() + 40
        while time.monotonic() < t_end:
            sb_ = b.status()
            checks.append((sb_["role"], sb_["peer"]["term"]))
            time.sleep(0.5)
        learned = b.status()["peer"]
        learned_a = a.status()
        a.proc.kill()
        wait_for(lambda: b.status()["role"] == "leader", timeout=3)
        counts = link.close()
    assert all(r == "follower" and t == term for r, t in checks), \
        ([(i / 2, c) for i, c in enumerate(checks) if c != ("follower", term)],
         [ln for ln in b.log().splitlines() if "taking over" in ln],
         f"relay: {counts}", f"leader writer: {learned_a.get('writer')}, "
         f"xruns {learned_a.get('xruns')}")
    assert learned["detector"]["learned"] and learned["timeout_ms"] > 12, learned
    print(f"lossy link: {counts}; follower learned timeout {learned['timeout_ms']} ms "
          f"({learned['detector']})")


@pytest.mark.parametrize("follower_extra,warning", [
    ("", "peer.priority: not set on a follower"),
])
def test_check_warns_about_a_pair_it_can_see_alone(tmp_path, follower_extra, warning):
    import subprocess
    import sys
    key = keyfile(tmp_path / "peer.key")
    port = free_port()
    show = make_show(tmp_path / "b", [2.0], extra=peer(
        "follower", port, port, key, follower_extra))
    out = subprocess.run([sys.executable, "-m", "appliance", "check", "--config",
                          str(show.config), "--no-device"], capture_output=True, text=True)
    assert warning in out.stdout + out.stderr
    assert "is this unit's own listen address" in out.stdout + out.stderr
    short = tmp_path / "short.key"
    short.write_text("abcd")
    show2 = make_show(tmp_path / "c", [2.0], extra=peer("leader", port, free_port(), short))
    out2 = subprocess.run([sys.executable, "-m", "appliance", "check", "--config",
                           str(show2.config), "--no-device"], capture_output=True, text=True)
    assert "peer key too short" in out2.stdout + out2.stderr and out2.returncode == 1
    missing = make_show(tmp_path / "d", [2.0], extra=peer(
        "leader", port, free_port(), tmp_path / "nope.key"))
    out3 = subprocess.run([sys.executable, "-m", "appliance", "check", "--config",
                           str(missing.config), "--no-device"], capture_output=True, text=True)
    assert "peer key file not found" in out3.stdout + out3.stderr and out3.returncode == 1


def test_reload_that_changes_the_setlist_is_seen_by_the_pair(jack_audio_factory, tmp_path):
    """After a SIGHUP reload that changes one unit's setlist, the units no longer match (the
    hash was once computed at start only, and the follower followed a different show)."""
    import signal
    ja = jack_audio_factory(seconds=30)
    jb = jack_audio_factory(seconds=30)
    sa, sb = default_pair(tmp_path)
    with DaemonProcess(sa, ja.environ()) as a, DaemonProcess(sb, jb.environ()) as b:
        wait_both_protected(a, b)
        text = sb.config.read_text()
        sb.config.write_text(text.replace('title: "Song 1"', 'title: "Song One"'))
        b.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b.status()["title"] == "Song One", timeout=5)
        wait_cause(b, "setlist mismatch")
        wait_cause(a, "setlist mismatch")
        # the cause is reported after a second's hold; the live flag is read at another
        # instant, so it is waited for, not sampled (seen once in CI under load: False)
        wait_for(lambda: b.status()["peer"]["setlist_mismatch"], timeout=5,
                 what="the follower's live setlist-mismatch flag")
