"""The peer socket's receive times come from the kernel, not from when the thread woke."""

from __future__ import annotations

import socket
import struct
import time

from appliance.peer import udp


def test_arrival_time_is_when_the_datagram_came_not_when_it_was_read() -> None:
    rx = udp.open_socket("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sent = time.monotonic_ns()
        tx.sendto(b"hello", rx.getsockname())
        time.sleep(0.05)  # a busy peer thread: the datagram waits in the socket
        data, addr, t, stamped = udp.receive(rx)
        read = time.monotonic_ns()
        assert data == b"hello" and addr[1] == tx.getsockname()[1] and stamped
        assert sent <= t < sent + 20_000_000, (t - sent) / 1e6  # arrived within 20 ms of send
        assert read - t >= 45_000_000  # ... though read 50 ms later
    finally:
        rx.close()
        tx.close()


def test_nothing_waiting_raises_like_recvfrom() -> None:
    rx = udp.open_socket("127.0.0.1", 0)
    try:
        try:
            udp.receive(rx)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("expected BlockingIOError")
    finally:
        rx.close()


def stamp(real_ns: int) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, udp.SCM_TIMESTAMPNS,
             struct.pack("@ll", real_ns // 10**9, real_ns % 10**9))]


def test_stamps_that_cannot_be_right_give_way_to_the_read_time() -> None:
    mono, real = 5_000_000_000, 1_700_000_000_000_000_000
    assert udp.arrival_ns(stamp(real - 300_000), mono, real) == mono - 300_000
    assert udp.arrival_ns(stamp(real + 1_000), mono, real) is None  # from the future
    assert udp.arrival_ns(stamp(real - 2_000_000_000), mono, real) is None  # a clock step
    assert udp.arrival_ns([], mono, real) is None
    assert udp.arrival_ns([(socket.SOL_SOCKET, udp.SCM_TIMESTAMPNS, b"\0")], mono, real) is None


def test_clock_pair_reads_both_clocks_at_one_instant() -> None:
    for _ in range(200):
        m1 = time.monotonic_ns()
        mono, real = udp.clock_pair()
        m2 = time.monotonic_ns()
        assert m1 <= mono <= m2
        # the pair's distance between the clocks matches a fresh one to well under 50 us
        # (what two plain reads were seen to be apart under load), most of the time
    gaps = []
    for _ in range(50):
        a = udp.clock_pair()
        b = udp.clock_pair()
        gaps.append(abs((a[1] - a[0]) - (b[1] - b[0])))
    assert sorted(gaps)[len(gaps) // 2] < 20_000, gaps

