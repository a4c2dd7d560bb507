"""The real-audio harness (tests/jackaudio.py) records what a pyalsaaudio player plays.

Players run in subprocesses (as the appliance will), through the ALSA PCM ``backtrack_test``
(plug -> jack plugin -> private jackd, dummy backend -> recorder process). What these tests
established (see also the tests.jackaudio module docstring):

* pyalsaaudio 0.11 ``PCM.write()`` takes any C-contiguous buffer (numpy array, memoryview,
  bytearray; parsed with ``y*``, no copy to bytes); a non-contiguous array raises ValueError.
  In PCM_NORMAL mode it blocks while the buffer is full and returns the frames written; after
  an underrun it returns -32 (-EPIPE) *without writing* (the PCM is re-prepared).
* The FLOAT_LE path is bit-exact; S32_LE goes through plug's int -> float conversion (< 1e-6).
* End-to-end latency at period 256 x 3 periods, 48 kHz, blocking writer keeping the buffer
  full: ~11-16 ms from the start of ``write()`` to the recorder's timestamp of its first frame.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from appliance.devtools.virtualcard import JACK_TMPDIR
from tests.jackaudio import JackServer, Recorder, Recording, jack_registry_servers, judged
from tests.showkit import trace

RATE = 48000
PERIOD = 256

# A player: argv[1] is JSON {channels, rate, period, format, seconds, silence_s, device}. Plays
# `silence_s` of silence, `seconds` of the signal, a buffer of silence, then closes (drains).
# Prints JSON timings on stdout.
PLAYER = r"""
import json, sys, time
import numpy as np
import alsaaudio

a = json.loads(sys.argv[1])
ch, rate, period = a["channels"], a["rate"], a["period"]
fmt = {"FLOAT_LE": alsaaudio.PCM_FORMAT_FLOAT_LE, "S32_LE": alsaaudio.PCM_FORMAT_S32_LE}[a["format"]]
pcm = alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NORMAL, rate=rate,
                    channels=ch, format=fmt, periodsize=period, periods=3, device=a["device"])
info = pcm.info()
n = int(a["seconds"] * rate) // period * period
t = np.arange(n, dtype=np.float64)[:, None]
c = np.arange(ch, dtype=np.float64)[None, :]
sig = (0.1 * (c + 1) * np.sin(2 * np.pi * (110 + 97 * c) * t / rate + np.pi / 4)).astype(np.float32)
if a["format"] == "S32_LE":
    buf = np.round(sig.astype(np.float64) * 2**31).astype(np.int32)
else:
    buf = sig
silence = np.zeros((period, ch), buf.dtype)
for _ in range(int(a["silence_s"] * rate) // period):
    assert pcm.write(silence) == period
t_first_call = time.monotonic_ns()
r = pcm.write(buf[:period])          # a numpy array straight in, no tobytes()
t_first_return = time.monotonic_ns()
assert r == period, r
for i in range(period, n, period):
    r = pcm.write(memoryview(buf[i:i + period]))
    assert r == period, r
for _ in range(3):                   # a buffer of silence: see "drain" in tests.jackaudio
    assert pcm.write(silence) == period
pcm.close()                          # drains
t_end = time.monotonic_ns()
print(json.dumps({"t_first_call": t_first_call, "t_first_return": t_first_return,
                  "t_end": t_end, "frames": n, "rate": info["rate"],
                  "buffer_size": info["buffer_size"], "period_size": info["period_size"]}))
"""


def expected_signal(frames: int, channels: int) -> np.ndarray:
    t = np.arange(frames, dtype=np.float64)[:, None]
    c = np.arange(channels, dtype=np.float64)[None, :]
    return (0.1 * (c + 1) * np.sin(2 * np.pi * (110 + 97 * c) * t / RATE + np.pi / 4)).astype(
        np.float32
    )


def play(ja, *, seconds: float, fmt: str = "FLOAT_LE", silence_s: float = 0.0) -> dict:
    args = {
        "channels": ja.channels, "rate": ja.rate, "period": ja.period, "format": fmt,
        "seconds": seconds, "silence_s": silence_s, "device": ja.pcm,
    }  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-c", PLAYER, json.dumps(args)],
        env=ja.environ(),
        capture_output=True,
        text=True,
        timeout=seconds + silence_s + 20,
    )
    assert r.returncode == 0, f"player failed:\n{r.stderr}\n{ja.server.log()}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def play_recorded(jack_audio_factory, params: dict, **kw) -> tuple:
    """Play through a fresh server and record it."""
    ja = jack_audio_factory(**params)
    out = play(ja, **kw)
    return ja, ja.stop(), out


def assert_plays(ja, rec, out, *, atol: float) -> int:
    """The recording holds exactly the player's signal on the right channels; returns start.

    On a clean recording every frame is compared; where the recorder missed cycles (a
    loaded machine) each piece between its seams is (tests.showkit.trace). A failure on a
    disturbed recording is HarnessDisturbed: the test is run again."""
    n = out["frames"]
    with judged(rec):
        start = rec.first_nonsilent()
        assert start is not None, "nothing recorded"
        assert rec.frames >= start + n - rec.missed_cycles() * ja.period, \
            "recording ends before the signal does"
        want = expected_signal(n, ja.channels)
        if rec.missed_cycles() == 0:
            got = rec.audio[start : start + n]
            if atol == 0:
                for ch in range(ja.channels):
                    bad = np.flatnonzero(got[:, ch] != want[:, ch])
                    assert len(bad) == 0, f"channel {ch}: {len(bad)} samples differ, first at {bad[0]}"
            else:
                np.testing.assert_allclose(got, want, rtol=0, atol=atol)
            end = start + n
        else:
            t = trace(rec, want, start, atol=atol)
            assert t.problem is None, t.problem
            end = t.rec_end
        assert not rec.audio[:start].any(), "noise before the signal"
        assert not rec.audio[end:].any(), "noise after the signal (after drain)"
    return start


def test_records_what_was_played_sample_exact_and_in_real_time(jack_audio_factory):
    ja, rec, out = play_recorded(jack_audio_factory, {}, seconds=3.0)
    assert (ja.channels, ja.rate, ja.period) == (8, RATE, PERIOD)
    assert out["rate"] == RATE and out["period_size"] == PERIOD and out["buffer_size"] == 3 * PERIOD
    start = assert_plays(ja, rec, out, atol=0)

    # paced by the clock: 3 s of audio take ~3 s to play (minus the 16 ms buffer filled at once)
    wall = (out["t_end"] - out["t_first_call"]) / 1e9
    assert 2.5 < wall < 6.0, wall
    with judged(rec):  # a dummy server re-anchoring after a stall loses that time
        heard = (rec.time_of_frame(start + out["frames"]) - rec.time_of_frame(start)) / 1e9
        assert heard == pytest.approx(3.0, abs=0.05)
        assert rec.measured_rate() == pytest.approx(RATE, rel=1e-3)


def test_s32_player_through_plug(jack_audio_factory):
    ja, rec, out = play_recorded(jack_audio_factory, {"channels": 2, "seconds": 10},
                                 seconds=1.0, fmt="S32_LE")
    assert rec.channels == 2
    assert_plays(ja, rec, out, atol=1e-6)


def test_latency_from_write_to_output(jack_audio_factory):
    ja = jack_audio_factory(channels=2, seconds=10)
    out = play(ja, seconds=0.2, silence_s=0.3)
    rec = ja.stop()
    start = rec.first_nonsilent()
    assert start is not None
    assert start % PERIOD == 0  # JACK period = ALSA period here: blocks stay aligned
    from_call = (rec.time_of_frame(start) - out["t_first_call"]) / 1e6
    from_return = (rec.time_of_frame(start) - out["t_first_return"]) / 1e6
    print(f"latency: {from_call:.2f} ms from write() call, {from_return:.2f} ms from its return")
    # the writer keeps 768 frames (16 ms) queued; a new period comes out ~512 frames later
    assert 0 < from_call < 50, from_call
    assert 5 < from_return < 40, from_return


def test_recorder_progress_and_blocks(jack_audio_factory):
    ja = jack_audio_factory(channels=1, seconds=5)
    f0 = ja.recorder.frames_so_far()
    f1 = ja.recorder.wait_frames(f0 + 10 * PERIOD, timeout=5)
    assert f1 >= f0 + 10 * PERIOD
    rec = ja.stop()
    assert rec.frames >= f1 and rec.rate == RATE and rec.audio.dtype == np.float32
    assert np.array_equal(rec.block_frames, np.arange(len(rec.block_frames)) * PERIOD)
    assert np.all(np.diff(rec.block_times_ns) > 0)
    assert not rec.audio.any()  # nothing connected: silence
    assert rec.first_nonsilent() is None
    # interpolation: frame k*PERIOD is block k's timestamp, halfway lies halfway
    k = 3
    t = rec.time_of_frame(k * PERIOD + PERIOD // 2)
    assert t == pytest.approx((rec.block_times_ns[k] + rec.block_times_ns[k + 1]) / 2)
    assert rec.frame_at_time(rec.block_times_ns[k]) == pytest.approx(k * PERIOD)


def test_faketime_server_runs_fast():
    """A server under libfaketime "x1.0005" consumes audio 500 ppm fast, measured against a
    normal server over the same ~4 s of CLOCK_MONOTONIC (measured here: +498..+511 ppm)."""
    normal = JackServer(rate=RATE, period=PERIOD)
    fast = JackServer(rate=RATE, period=PERIOD, faketime="+0 x1.0005")
    recs = []
    try:
        for s in (normal, fast):
            s.start()
            recs.append(Recorder(s, channels=1, seconds=10).start())
        time.sleep(4.0)
        r_normal, r_fast = (r.stop() for r in recs)
    finally:
        for r in recs:
            r.kill()
        normal.stop()
        fast.stop()
    ppm_normal = (r_normal.measured_rate() / RATE - 1) * 1e6
    ratio = r_fast.measured_rate() / r_normal.measured_rate()
    print(
        f"normal server {ppm_normal:+.1f} ppm vs monotonic; faketime/normal"
        f" {(ratio - 1) * 1e6:+.1f} ppm; xruns {r_normal.xruns}/{r_fast.xruns}"
        f" (driver {normal.driver_xruns()}/{fast.driver_xruns()})"
    )
    with judged(r_normal, r_fast):  # a stalled server loses time: not a rate to judge
        assert abs(ppm_normal) < 100
        assert 1.0002 < ratio < 1.0008


def test_teardown_leaves_nothing():
    s = JackServer(rate=RATE, period=PERIOD).start()
    pid, name = s.proc.pid, s.name
    s.write_alsa_config(2)
    rec = Recorder(s, channels=2, seconds=1).start()
    rec_pid, rec_dir = rec.proc.pid, rec.workdir
    os.kill(pid, 9)  # worst case: jackd dies hard, leaving its files in /dev/shm
    s.proc.wait()
    assert list(JACK_TMPDIR.glob(f"jack_{name}_*"))
    rec.kill()
    s.stop()
    assert not list(JACK_TMPDIR.glob(f"jack_{name}_*"))
    assert not list(JACK_TMPDIR.glob(f"jack_sem.*_{name}_*"))
    assert not rec_dir.exists() and not s.workdir.exists()
    assert name not in [n for _pid, n, _alive in jack_registry_servers()]  # slot freed
    for p in (pid, rec_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(p, 0)


def test_schedule_time_removes_callback_jitter_and_follows_a_step():
    """Synthetic blocks: a server 500 ppm fast, callbacks late by exponential jitter (0.3 ms
    mean, as measured here), the server re-anchored 1.3 ms later at block 3000 and once
    missed a cycle (its frame counter jumps). The schedule times sit on the true cycle
    starts (plus the lowest jitter) while the raw callback times are off by the jitter."""
    rng = np.random.default_rng(3)
    n, bs, rate = 6000, 256, 48000
    ns_per_frame = 1e9 / (rate * 1.0005)
    jack = np.arange(n, dtype=np.int64) * bs + 4_000_000_000  # wraps past 2**32
    jack[4000:] += bs  # a missed cycle
    true = 5e12 + (jack - jack[0]) * ns_per_frame
    true[3000:] += 1.3e6
    times = (true + rng.exponential(0.3e6, n)).astype(np.int64)
    rec = Recording(audio=np.zeros((n * bs, 1), np.float32), rate=rate,
                    block_frames=np.arange(n, dtype=np.int64) * bs, block_times_ns=times,
                    block_jack_frames=jack % 2**32)
    frames = np.arange(0, n * bs, 997)
    blocks = frames // bs
    want = true[blocks] + (frames - blocks * bs) * ns_per_frame
    sched = rec.schedule_time_of_frame(frames)
    raw = rec.time_of_frame(frames)
    near_step = (abs(blocks - 3000) < 200)  # within the envelope window of the step
    err = np.abs(sched - want)[~near_step]
    assert np.percentile(err, 99) < 20e3, np.percentile(err, 99)  # ns
    assert np.percentile(np.abs(raw - want), 50) > 100e3  # what the jitter does untreated
    assert np.abs(sched - want)[near_step].max() < 1.4e6
