"""Writer.post from several threads at once (the control socket under the engine lock, the
peer thread without it): every command gets its own sequence number, and the numbers
stand in the command queue in order, because the writer acknowledges 'everything up to
seq N' (Engine reads acked >= seq as applied)."""

from __future__ import annotations

import sys
import threading

from appliance.audio.writer import Writer
from appliance.config import Device


def test_concurrent_posts_get_unique_numbers_in_queue_order():
    w = Writer(Device(name="null", channels=2), [], 16)   # never started: no device opened
    per_thread, threads = 20000, 4
    got: list[list[int]] = [[] for _ in range(threads)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)     # switch threads as often as possible
    try:
        def poster(k: int) -> None:
            for _ in range(per_thread):
                got[k].append(w.post("noop", k))
        ts = [threading.Thread(target=poster, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    seqs = [c[0] for c in w.commands]
    assert len(seqs) == per_thread * threads
    assert len(set(seqs)) == len(seqs), "two commands got one sequence number"
    assert seqs == sorted(seqs), "a command stands in the queue behind a later number"
    assert sorted(x for g in got for x in g) == seqs
