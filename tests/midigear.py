"""The receiving "gear" for MIDI out tests and the MIDI clock benchmark: a JACK MIDI input
port named `<client>:gear` that timestamps everything it receives.

It runs in a process of its own: rtmidi calls back from JACK's process thread, which must
not wait for a GIL held by the daemon's threads. `python -m tests.midigear CLIENT` prints
"ready", collects until its stdin closes, then prints the messages as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time


class Gear:
    def __init__(self, env: dict[str, str], client: str = "testgear"):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.midigear", client], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the MIDI gear process did not start")
        self.msgs: list[tuple[list[int], int]] = []

    def stop(self) -> list[tuple[list[int], int]]:
        """Everything received, as (message bytes, monotonic ns)."""
        if self.proc.poll() is None:
            out, _ = self.proc.communicate("", timeout=10)
            self.msgs = [(m, t) for m, t in json.loads(out)]
        return self.msgs

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main(client: str) -> int:
    import rtmidi

    got: list = []
    gear = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
    gear.ignore_types(sysex=False, timing=False, active_sense=True)
    gear.set_callback(lambda ev, _d=None: got.append((ev[0], time.monotonic_ns())))
    gear.open_virtual_port("gear")
    print("ready", flush=True)
    sys.stdin.read()
    gear.cancel_callback()  # no callback may wait for the GIL while delete() holds it
    time.sleep(0.1)
    gear.delete()
    print(json.dumps(got), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "testgear"))
