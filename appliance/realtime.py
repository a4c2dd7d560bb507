"""Real-time scheduling for the daemon's threads.

The writer needs SCHED_FIFO to be woken on time, but in CPython it also needs the GIL, and
the GIL may be held by another thread of the daemon. If that thread runs at normal priority,
a CPU hog elsewhere on the box can preempt it while it holds the GIL, and the writer waits
behind it (priority inversion): measured here as underruns with the writer alone at FIFO.
So every thread of the daemon that takes the GIL gets a FIFO priority below the writer's;
their work is short and bounded (NumPy decode blocks, socket replies, status), and the
kernel's RT throttling still leaves 5% of the CPU to everything else.
"""

from __future__ import annotations

import ctypes
import os
import threading

_PR_SET_NAME = 15


def name_os_thread() -> None:
    """Give the calling thread its Python name in the kernel too (15 bytes), so `top -H`,
    `ps -L` and /proc show which of the daemon's threads uses the CPU."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_NAME, threading.current_thread().name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_thread_fifo(priority: int) -> str:
    """Ask SCHED_FIFO for the calling thread (and name it for the kernel); returns a status
    line for `status`."""
    name_os_thread()
    if priority <= 0:
        return "real-time scheduling not requested"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(min(priority, 99)))
    except (PermissionError, OSError) as exc:
        return (f"no real-time scheduling ({exc.strerror or exc}); grant LimitRTPRIO "
                "in the service")
    return f"SCHED_FIFO priority {priority}"


def lowest_fifo_no_inherit(realtime: bool, name: bool = True) -> str:
    """The calling thread at the lowest real-time priority (for the GIL's sake, like every
    daemon thread), with RESET_ON_FORK: a child it starts (the self-test's checksum reader,
    `vcgencmd`, the stem converter) must begin life as an ordinary process, not at a
    real-time priority, where an interpreter's start-up can hold a thread of the same
    priority off the CPU (the likely cause of a false takeover seen once in
    tests/test_protection.py's lossy link before this was done; not seen since, one run of
    that file). `name`: give the thread its Python name in the kernel (not for the main
    thread: that would rename the process). Returns a status line."""
    if name:
        name_os_thread()
    if not realtime:
        return "normal priority (engine.realtime_priority is 0)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except OSError as exc:
        return f"normal priority ({exc.strerror or exc})"
    return "SCHED_FIFO priority 1"


NETWORK_PRIORITY = 1
"""SCHED_FIFO priority of the threads that serve the network (web remote, OSC): the lowest
real-time one, below every audio thread and the control socket."""


def set_thread_network(realtime: bool) -> str:
    """The priority of a thread that serves the network (the web remote, OSC, their command
    thread): SCHED_FIFO 1 when the daemon runs real-time, else normal; names the thread.

    Why not normal priority, as work that may be done late: these threads take the GIL,
    and a normal-priority thread preempted by any busy process while it holds the GIL
    holds the writer with it. Measured (bench/remote.py, 128 x 3, 100 pages and 200
    requests a second, a CPU hog per core, 60 s runs): at normal priority 2 underruns and
    0, the writer's per-period cost up to 2.7-2.8 ms; at FIFO 1, 0 and 0, at most 0.65 ms.
    The price: a flood is served ahead of the box's ordinary processes on one core (the
    kernel's real-time throttling still leaves them 5 %), never ahead of the audio."""
    name_os_thread()
    if not realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:
            return f"priority unchanged ({exc.strerror or exc})"
        return "normal priority (engine.realtime_priority is 0)"
    return set_thread_fifo(NETWORK_PRIORITY)


def pin_thread(cpu: str | int) -> str:
    """Pin the calling thread (and the threads it creates from now on, such as an ALSA
    plugin's) to one CPU; returns a status fragment, empty when not pinned.

    Why: a real-time thread that may run on any core is woken wherever the scheduler's
    real-time balancing puts it, often across cores (an inter-processor interrupt, a cold
    cache); pinned, it is woken where it last ran. Measured on the virtual card: the writer's
    CPU fell from 0.78 % to 0.47 % of a core. "auto" takes the last CPU the daemon may use
    (CPU 0 usually takes the most interrupts, USB's included on a Raspberry Pi), and only
    when there are at least two. Never fatal: a CPU that is not there is reported and the
    thread stays unpinned."""
    if cpu == "none":
        return ""
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return ""
    if cpu == "auto":
        if len(allowed) < 2:
            return ""
        cpu = max(allowed)
    if cpu not in allowed:
        return f"not pinned (CPU {cpu} is not available; have {sorted(allowed)})"
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        return f"not pinned to CPU {cpu} ({exc.strerror or exc})"
    return f"pinned to CPU {cpu}"
