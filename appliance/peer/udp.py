"""The peer socket: UDP with the kernel's receive timestamp of every datagram.

Why: the clock offset between two units comes from four timestamps per PING/PONG, and
the two receive times (t2 on the leader, t4 on the follower) were taken when the peer
thread got round to reading the socket. That wake-up latency differs between a busy
leader and a follower, and half of the difference goes straight into the offset (seen
here: 10 us of bias). The kernel stamps each datagram as it arrives (SO_TIMESTAMPNS), so
t2 and t4 no longer carry any scheduling delay. The stamp is CLOCK_REALTIME; it is turned
into CLOCK_MONOTONIC with the current distance between the two clocks, which only a step
of the wall clock changes (both are slewed alike), and a stamp that does not fit (a step
in between, a kernel without stamps) gives way to the time of reading.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time

# Linux values (asm-generic, so the same on x86-64 and arm64); Python does not name them
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec as native longs
_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
MAX_STAMP_AGE_NS = 1_000_000_000  # older than this: not believed (a wall clock step)


def open_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket that asks the kernel to stamp what arrives (where
    it cannot, `receive` says so per datagram)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def receive(sock: socket.socket, size: int = 2048) -> tuple[bytes, tuple, int, bool]:
    """One datagram: (data, sender address, monotonic ns it arrived, kernel-stamped).
    Raises BlockingIOError when there is none, like recvfrom."""
    data, anc, _flags, addr = sock.recvmsg(size, _ANC_SPACE)
    now_mono, now_real = clock_pair()
    t = arrival_ns(anc, now_mono, now_real)
    return data, addr, (now_mono if t is None else t), t is not None


def clock_pair(tries: int = 3) -> tuple[int, int]:
    """(monotonic ns, real ns) for the same instant. Two plain reads in a row are as far
    apart as the thread was held off between them (seen: 50 us on a loaded machine, which
    put a datagram's arrival before its sending); the monotonic read is bracketed by two
    real-time reads, and the tightest of a few brackets gives their middle."""
    best: tuple[int, int, int] | None = None
    for _ in range(tries):
        r1 = time.time_ns()
        m = time.monotonic_ns()
        r2 = time.time_ns()
        if best is None or r2 - r1 < best[0]:
            best = (r2 - r1, m, (r1 + r2) // 2)
    return best[1], best[2]


def arrival_ns(ancdata: list[tuple[int, int, bytes]], now_mono_ns: int,
               now_real_ns: int) -> int | None:
    """The kernel's arrival stamp from recvmsg's ancillary data, on the monotonic clock;
    None when there is none or it cannot be right (later than now, or too old)."""
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS \
                and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            age = now_real_ns - (sec * 1_000_000_000 + nsec)
            if 0 <= age <= MAX_STAMP_AGE_NS:
                return now_mono_ns - age
    return None
