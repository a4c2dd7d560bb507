"""Pinning the writer to a core: the thread that asks is pinned (and only it), a CPU that is
not there is reported and never fatal."""

from __future__ import annotations

import os
import threading

from appliance.realtime import pin_thread


def in_thread(fn):
    out = {}

    def run():
        out["status"] = fn()
        out["mine"] = os.sched_getaffinity(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["status"], out["mine"]


def test_auto_pins_the_calling_thread_to_the_last_cpu_only():
    allowed = os.sched_getaffinity(0)
    status, mine = in_thread(lambda: pin_thread("auto"))
    if len(allowed) >= 2:
        assert mine == {max(allowed)}
        assert status == f"pinned to CPU {max(allowed)}"
    else:
        assert mine == allowed and status == ""
    assert os.sched_getaffinity(0) == allowed  # the caller's other threads are untouched


def test_a_cpu_number_and_none():
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    status, mine = in_thread(lambda: pin_thread(cpu))
    assert (status, mine) == (f"pinned to CPU {cpu}", {cpu})
    status, mine = in_thread(lambda: pin_thread("none"))
    assert (status, mine) == ("", allowed)


def test_a_cpu_that_is_not_there_is_reported_not_fatal():
    allowed = os.sched_getaffinity(0)
    status, mine = in_thread(lambda: pin_thread(1023))
    assert "CPU 1023 is not available" in status
    assert mine == allowed


def test_the_daemons_main_thread_cannot_be_preempted_by_ordinary_processes(jack_audio, tmp_path):
    """The main thread takes the GIL too (status, state file, signals): at normal priority a
    busy process preempting it while it holds the GIL would hold up the writer and the peer
    thread with it. It runs at SCHED_FIFO 1, below every thread of the player."""
    from tests.showkit import DaemonProcess, make_show
    show = make_show(tmp_path, [2.0])
    with DaemonProcess(show, jack_audio.environ()) as d:
        pid = d.proc.pid
        policy = os.sched_getscheduler(pid)
        assert policy & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
        assert policy & os.SCHED_RESET_ON_FORK  # what it starts does not inherit it
        assert os.sched_getparam(pid).sched_priority == 1
        assert "main thread: SCHED_FIFO priority 1" in d.log()
