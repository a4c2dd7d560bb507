"""The daemon as systemd sees it: a NOTIFY_SOCKET datagram socket stands in for systemd and
records READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1 from a real `backtrack run`
process; the sound card is the JACK dummy server (tests/conftest.py) or, where the test is
about a missing interface, an ALSA PCM that does not exist.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from appliance import config as config_mod
from appliance import systemd
from appliance.service import Daemon as ServiceDaemon
from appliance.service import log_context, summary
from tests.jackaudio import judged
from tests.showkit import RATE, DaemonProcess, find_song_start, make_show, mismatches, trace

MISSING_PCM = "backtrack_no_such_pcm"


class NotifyListener:
    """What systemd would receive on NOTIFY_SOCKET: (monotonic time, KEY=VALUE line)."""

    def __init__(self, folder: Path):
        self.path = str(folder / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._run = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._run:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            t = time.monotonic()
            with self._lock:
                self.lines += [(t, ln) for ln in data.decode().split("\n") if ln]

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_s:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def times(self, prefix: str, since: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, ln in self.lines if ln.startswith(prefix) and t >= since]

    def values(self, prefix: str, since: float = 0.0) -> list[str]:
        with self._lock:
            return [ln[len(prefix):] for t, ln in self.lines if ln.startswith(prefix)
                    and t >= since]

    def wait_for(self, prefix: str, contains: str = "", timeout: float = 10.0,
                 since: float = 0.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for v in self.values(prefix, since):
                if contains in v:
                    return v
            time.sleep(0.02)
        raise AssertionError(f"no {prefix}…{contains} within {timeout} s; got {self.lines}")

    def close(self) -> None:
        self._run = False
        self._thread.join(1)
        self.sock.close()


def wait_status(d: DaemonProcess, timeout: float = 10.0, **want) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = d.ctl("status")["state"]
        if all(st.get(k) == v for k, v in want.items()):
            return st
        time.sleep(0.02)
    raise AssertionError(f"status {want} not reached; last {st}\n{d.log()[-2000:]}")


def rewrite(show_config: Path, edit) -> None:
    doc = yaml.safe_load(show_config.read_text())
    edit(doc)
    show_config.write_text(yaml.safe_dump(doc, sort_keys=False))


# --------------------------------------------------------------------------------------------
# readiness, status, watchdog


def test_ready_status_and_watchdog_stop_when_the_writer_freezes(jack_audio, tmp_path):
    show = make_show(tmp_path, [8.0, 4.0, 4.0])
    nl = NotifyListener(tmp_path)
    try:
        env = jack_audio.environ(**nl.env(watchdog_s=1.0))
        with DaemonProcess(show, env) as d:
            status = nl.wait_for("STATUS=", timeout=5)
            assert "READY=1" in [ln for _t, ln in nl.lines]
            assert 'cued 1/3 "Song 1"' in status and "waiting" not in status
            d.ctl("play")
            nl.wait_for("STATUS=", 'playing 1/3 "Song 1" 0:01', timeout=5)
            t0 = time.monotonic()
            time.sleep(2.6)
            pings = nl.times("WATCHDOG=1", since=t0)
            # WatchdogSec=1 -> a ping every 0.5 s while healthy
            assert 4 <= len(pings) <= 7, pings
            assert max(np.diff(pings)) < 0.8
            d.ctl({"cmd": "_fault", "freeze": True})
            t_freeze = time.monotonic()
            nl.wait_for("STATUS=", "stalled", timeout=3, since=t_freeze)
            time.sleep(2.0)
            # stall threshold 0.5 s (half the watchdog) + one 0.5 s tick: then silence
            late = nl.times("WATCHDOG=1", since=t_freeze + 1.1)
            assert late == [], f"pinged while frozen: {[t - t_freeze for t in late]}"
            assert "audio path has stalled" in d.log()
            d.ctl({"cmd": "_fault", "freeze": False})
            t_thaw = time.monotonic()
            time.sleep(1.5)
            assert len(nl.times("WATCHDOG=1", since=t_thaw)) >= 2  # pings resume
            assert d.stop() == 0
    finally:
        nl.close()


def test_ready_while_the_interface_is_missing_and_status_says_so(tmp_path):
    show = make_show(tmp_path, [2.0] * 20, pcm=MISSING_PCM)
    nl = NotifyListener(tmp_path)
    try:
        t0 = time.monotonic()
        with DaemonProcess(show, {**os.environ, **nl.env(watchdog_s=2.0)}) as d:
            nl.wait_for("READY=1", timeout=10)
            ready_s = nl.times("READY=1")[0] - t0
            status = nl.wait_for("STATUS=")
            assert "waiting for the audio interface" in status and MISSING_PCM in status
            assert 'cued 1/20 "Song 1"' in status
            # waiting for the device is idle on purpose: the watchdog keeps being fed
            t1 = time.monotonic()
            time.sleep(2.2)
            assert len(nl.times("WATCHDOG=1", since=t1)) >= 2
            assert d.stop() == 0
        assert ready_s < 10
        assert nl.times("STOPPING=1")
    finally:
        nl.close()


# --------------------------------------------------------------------------------------------
# SIGTERM


def test_sigterm_fades_out_closes_and_exits_0(jack_audio, tmp_path):
    show = make_show(tmp_path, [6.0])
    nl = NotifyListener(tmp_path)
    try:
        with DaemonProcess(show, jack_audio.environ(**nl.env())) as d:
            d.ctl("play")
            wait_status(d, state="playing")
            time.sleep(1.0)
            d.proc.send_signal(signal.SIGTERM)
            rc = d.proc.wait(10)
            assert rc == 0, d.log()
            assert nl.times("STOPPING=1")
            time.sleep(0.3)
        rec = jack_audio.stop()
    finally:
        nl.close()
    exp = show.expected(0)
    with judged(rec):
        start = find_song_start(rec.audio, exp[:64])
        assert start is not None
        last = rec.last_nonsilent()
        assert last is not None and last - start > 0.8 * RATE
        fade = int(0.005 * RATE)  # engine.fade_ms default: 5 ms
        # the song runs exactly up to the fade (across the recorder's seams), then fades
        # linearly to nothing
        t = trace(rec, exp, start)
        assert last + 1 - t.rec_end <= fade + 2, f"frames before the fade differ: {t.problem}"
        r0 = last + 1 - fade
        s0 = t.song_end + (r0 - t.rec_end)
        ratio = rec.audio[r0:last + 1, 0] / exp[s0:s0 + fade, 0]
        assert ratio[0] > 0.9 and ratio[-1] < 0.05, (ratio[0], ratio[-1])
        assert np.all(np.diff(ratio) <= 1e-6), "the fade-out is not monotonic"
        assert not np.any(rec.audio[last + 1:]), "sound after the fade"


# --------------------------------------------------------------------------------------------
# SIGHUP


def test_sighup_with_a_broken_config_keeps_playing(jack_audio, tmp_path):
    show = make_show(tmp_path, [6.0, 3.0])
    nl = NotifyListener(tmp_path)
    try:
        with DaemonProcess(show, jack_audio.environ(**nl.env())) as d:
            d.ctl("play")
            wait_status(d, state="playing")
            time.sleep(0.5)
            good = show.config.read_text()
            show.config.write_text(good.replace("channels: 8", "channels: many")
                                   + "surprise: 1\n")
            t_hup = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            nl.wait_for("STATUS=", "reload rejected", timeout=5, since=t_hup)
            assert nl.times("RELOADING=1", since=t_hup) and nl.times("READY=1", since=t_hup)
            st1 = d.ctl("status")["state"]
            time.sleep(0.5)
            st2 = d.ctl("status")["state"]
            assert st2["state"] == "playing" and st2["song"] == 1 and st2["songs"] == 2
            assert st2["position_s"] > st1["position_s"] + 0.3
            log = d.log()
            assert "reload rejected" in log and "device.channels" in log and "surprise" in log
            d.ctl("stop")
            time.sleep(0.2)
        rec = jack_audio.stop()
    finally:
        nl.close()
    # not one frame of the song was disturbed by the reload attempt
    exp = show.expected(0)
    with judged(rec):
        start = find_song_start(rec.audio, exp[:64])
        assert start is not None
        n = rec.last_nonsilent() - start - int(0.006 * RATE)  # up to the stop's fade
        assert n > 1.0 * RATE
        assert not mismatches(rec, exp[:n], start)


def test_sighup_swaps_the_setlist_between_songs(jack_audio, tmp_path):
    show = make_show(tmp_path, [3.0, 3.0, 3.0])
    nl = NotifyListener(tmp_path)

    def new_set(doc: dict) -> None:
        s = doc["songs"]
        doc["songs"] = [s[0], s[2], s[1], {**s[0], "title": "Encore"}]

    try:
        with DaemonProcess(show, jack_audio.environ(**nl.env())) as d:
            d.ctl("play")
            wait_status(d, state="playing")
            rewrite(show.config, new_set)
            t_hup = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            nl.wait_for("STATUS=", "applies when the song ends", timeout=5, since=t_hup)
            st = d.ctl("status")["state"]
            assert st["state"] == "playing" and st["songs"] == 3  # not under the band's feet
            # song 1 ends (after: stop): the old set would cue "Song 2" at index 2; the new
            # set has it third, and the cue follows the title
            st = wait_status(d, state="cued", timeout=8)
            assert st["songs"] == 4 and st["title"] == "Song 2" and st["song"] == 3, st
            assert d.ctl({"cmd": "goto", "song": 4})["state"]["title"] == "Encore"
            d.ctl("play")
            wait_status(d, state="playing", title="Encore")
            time.sleep(1.0)
            d.ctl("stop")
            time.sleep(0.2)
        rec = jack_audio.stop()
    finally:
        nl.close()
    exp = show.expected(0)
    with judged(rec):
        first = find_song_start(rec.audio, exp[:64])
        assert first is not None
        # song 1 played whole, untouched by the reload
        t = trace(rec, exp, first)
        assert t.problem is None, t.problem
        # "Encore" (the new song 4) is song 1's stems: it plays from frame 0 after that
        again = find_song_start(rec.audio, exp[:64], t.rec_end)
        assert again is not None
        n = int(0.8 * RATE)
        assert not mismatches(rec, exp[:n], again)


def test_sighup_device_change_needs_a_restart_and_keeps_the_device(tmp_path):
    show = make_show(tmp_path, [2.0, 2.0], pcm=MISSING_PCM)
    nl = NotifyListener(tmp_path)

    def edit(doc: dict) -> None:
        doc["device"]["name"] = "hw:CARD=Other,DEV=0"
        doc["songs"].append({**doc["songs"][0], "title": "Extra"})

    try:
        with DaemonProcess(show, {**os.environ, **nl.env()}) as d:
            nl.wait_for("READY=1")
            rewrite(show.config, edit)
            t = time.monotonic()
            d.proc.send_signal(signal.SIGHUP)
            nl.wait_for("STATUS=", "config reloaded (3 songs)", timeout=5, since=t)
            st = d.ctl("status")["state"]
            assert st["songs"] == 3
            assert MISSING_PCM in nl.values("STATUS=")[-1]  # still the old device
            assert "changes to device take effect after `systemctl restart backtrack`" in d.log()
            d.stop()
    finally:
        nl.close()


# --------------------------------------------------------------------------------------------
# state file


def test_state_file_cues_the_last_song_after_restart_and_after_a_kill(tmp_path):
    show = make_show(tmp_path, [2.0, 2.0, 2.0, 2.0], pcm=MISSING_PCM,
                     extra="state_file: state/show-state.json\n")
    (tmp_path / "state").mkdir()
    state_path = tmp_path / "state" / "show-state.json"
    with DaemonProcess(show, dict(os.environ)) as d:
        d.ctl({"cmd": "goto", "song": 3})
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if state_path.exists() and json.loads(state_path.read_text())["song"] == 2:
                break
            time.sleep(0.05)
        doc = json.loads(state_path.read_text())
        assert doc["song"] == 2 and doc["title"] == "Song 3" and doc["clean_shutdown"] is False
        assert d.stop() == 0
    assert json.loads(state_path.read_text())["clean_shutdown"] is True
    with DaemonProcess(show, dict(os.environ)) as d:
        assert d.ctl("status")["state"]["song"] == 3
        assert "ended cleanly in song 3 'Song 3'" in d.log()
        d.ctl("next")
        time.sleep(1.0)  # the state ticks every 0.5 s
        d.proc.kill()  # no goodbye: what a power cut looks like from the state file
        d.proc.wait()
        d.stop()
    leftovers = [p.name for p in state_path.parent.iterdir() if p.name != state_path.name]
    assert leftovers == []
    with DaemonProcess(show, dict(os.environ)) as d:
        assert d.ctl("status")["state"]["song"] == 4
        assert "without a clean stop" in d.log()
        d.stop()
    # a garbled state file: the daemon starts at song 1 and says why
    state_path.write_bytes(b"\x00\x00garbage")
    with DaemonProcess(show, dict(os.environ)) as d:
        assert d.ctl("status")["state"]["song"] == 1
        assert "damaged" in d.log()
        d.stop()


# --------------------------------------------------------------------------------------------
# pieces


def test_notifier_is_a_no_op_outside_systemd():
    n = systemd.Notifier({})
    assert not n.enabled and n.ping_interval is None
    n.ready("x")
    n.status("y")
    assert n.watchdog(True) is False


def test_watchdog_env_follows_sd_watchdog_enabled():
    assert systemd._watchdog_seconds({"WATCHDOG_USEC": "4000000"}) == 4.0
    assert systemd._watchdog_seconds({"WATCHDOG_USEC": "4000000",
                                      "WATCHDOG_PID": str(os.getpid())}) == 4.0
    assert systemd._watchdog_seconds({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert systemd._watchdog_seconds({"WATCHDOG_USEC": "junk"}) is None
    assert systemd._watchdog_seconds({}) is None


def test_notifier_pings_at_half_the_interval_only_when_healthy(tmp_path, monkeypatch):
    nl = NotifyListener(tmp_path)
    try:
        for k, v in nl.env(watchdog_s=2.0).items():
            monkeypatch.setenv(k, v)  # sd_notify(3) reads the process environment
        n = systemd.Notifier()
        assert n.ping_interval == 1.0
        assert n.watchdog(True, now=100.0)
        assert not n.watchdog(True, now=100.5)
        assert not n.watchdog(False, now=101.5)
        assert n.watchdog(True, now=101.6)
        n.status("same")
        n.status("same")
        n.status("multi\nline   text")
        time.sleep(0.2)
        assert nl.values("WATCHDOG=") == ["1", "1"]
        assert nl.values("STATUS=") == ["same", "multi line text"]
    finally:
        nl.close()


def test_journal_only_when_stderr_is_the_journal_stream():
    r, w = os.pipe()
    try:
        st = os.fstat(w)
        assert systemd.under_systemd({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, w)
        assert not systemd.under_systemd({"JOURNAL_STREAM": "1:2"}, w)
        assert not systemd.under_systemd({"INVOCATION_ID": "abc"}, w)
        assert not systemd.under_systemd({}, w)
    finally:
        os.close(r)
        os.close(w)


def test_journal_records_carry_song_position_underruns_role(tmp_path):
    show = make_show(tmp_path, [1.0, 1.0], pcm=MISSING_PCM)
    daemon = ServiceDaemon(config_mod.load(show.config))  # not started: nothing plays
    sent: list[tuple[str, dict]] = []
    handler = systemd.JournalFieldsHandler(lambda: log_context(daemon),
                                           sender=lambda msg, **kw: sent.append((msg, kw)))
    lg = logging.getLogger("backtrack.test-journal")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.warning("underrun (xrun) #%d", 3)
    finally:
        lg.removeHandler(handler)
    msg, fields = sent[0]
    assert msg == "underrun (xrun) #3"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "backtrack"
    assert fields["BACKTRACK_SONG"] == "1" and fields["BACKTRACK_TITLE"] == "Song 1"
    assert fields["BACKTRACK_POSITION"] == "0.000" and fields["BACKTRACK_UNDERRUNS"] == "0"
    assert fields["BACKTRACK_ROLE"] == "leader" and fields["BACKTRACK_STATE"] == "cued"
    assert all(k == k.upper() for k in fields)
    assert summary(daemon).startswith("waiting for the audio interface")


def test_run_outside_systemd_logs_to_stderr(tmp_path):
    """No NOTIFY_SOCKET, no journal: `backtrack run` in a terminal still works and says
    where it logs."""
    show = make_show(tmp_path, [1.0], pcm=MISSING_PCM)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
    with DaemonProcess(show, env) as d:
        assert d.stop() == 0
        assert "logging to stderr, watchdog off" in d.log()


def test_setup_logging_replaces_handlers():
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        assert systemd.setup_logging(env={}) == "stderr"
        assert systemd.setup_logging(env={}) == "stderr"
        assert len(root.handlers) == 1
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)


def test_cache_goes_to_the_units_cache_directory_unless_configured(tmp_path, monkeypatch):
    from appliance.service import with_service_dirs

    show = make_show(tmp_path, [1.0], pcm=MISSING_PCM)
    cfg = config_mod.load(show.config)
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    assert with_service_dirs(cfg).cache_dir == tmp_path / ".backtrack-cache"
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/backtrack")
    assert with_service_dirs(cfg).cache_dir == Path("/var/cache/backtrack")
    show.config.write_text(show.config.read_text().replace(
        "engine: {readahead: 1.0}", 'engine: {readahead: 1.0, cache_dir: "mine"}'))
    assert with_service_dirs(config_mod.load(show.config)).cache_dir == tmp_path / "mine"
