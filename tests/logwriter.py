"""A show-log writer in its own process, for the power-cut test (tests/test_showlog.py).

    python -m tests.logwriter DIR SEED

Queues numbered records as fast as a busy show never would, through the real
`appliance.showlog.ShowLog` thread, and prints `ACK n part size` whenever the writer has
fsync'd more: records 0..n-1 are durable, and the file of that part was `size` bytes long
then. The test kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from appliance.showlog import LogLimits, ShowLog


def pad(seed: int, i: int) -> str:
    """Record i's payload: its length and letters follow from (seed, i), so the reader's
    side can tell a record read back exactly from anything else."""
    r = random.Random(seed * 1_000_003 + i)
    return "".join(chr(97 + r.randrange(26)) for _ in range(r.randrange(0, 600)))


def main() -> int:
    folder, seed = Path(sys.argv[1]), int(sys.argv[2])
    slog = ShowLog(folder, LogLimits(max_file_bytes=48 * 1024, max_total_bytes=1 << 30,
                                     flush_s=0.01), queue_max=1 << 20)
    slog.begin_show()
    slog.start()
    acked = -1
    i = 0
    while True:
        for _ in range(20):
            slog.record("t", i=i, pad=pad(seed, i))
            i += 1
        time.sleep(0.0005)
        n = slog.durable_items - 1  # item 0 is the show's start
        if n > acked and slog.current is not None:
            cur = slog._open
            acked = n
            print(f"ACK {n} {cur.part} {cur.size}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
