"""`backtrack demo` (what `make demo` runs): generate the demo set and play it.

Plays on the first real sound card; on a machine with none (a CI box, a container), on a
private virtual card: a JACK server with the dummy backend, paced in real time, reached
through the ALSA `jack` plugin, so the whole real path (ALSA PCM, writer thread, device
delay) runs exactly as on the Pi. The live status line is the same as `backtrack ctl status
--watch`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from ..config import load
from ..ctl import Client, status_line
from ..errors import UserError
from .demoset import write_demo_set

VIRTUAL = "virtual"  # --device virtual: the private virtual card even where a card exists


def first_card() -> str | None:
    """`plughw:CARD=<id>,DEV=0` of the first ALSA card (pyalsaaudio's list), or None."""
    try:
        import alsaaudio
        ids = alsaaudio.cards()
    except Exception:  # noqa: BLE001 - no ALSA at all: the virtual card will do
        return None
    return f"plughw:CARD={ids[0]},DEV=0" if ids else None


def main(folder: str | None, device: str | None, seconds: float | None) -> int:
    from ..service import Daemon, setup_logging

    setup_logging()
    out = Path(folder or "demo-set").absolute()
    virtual = None
    device = device or first_card()
    if device is None or device == VIRTUAL:
        from .virtualcard import JackError, JackServer

        why = "as asked" if device == VIRTUAL else "no sound card found"
        print(f"{why}: playing on a private virtual card "
              "(JACK dummy backend through the ALSA jack plugin)", flush=True)
        try:
            virtual = JackServer(rate=48000, period=512, playback_ports=2).start()
        except (JackError, OSError) as exc:
            raise UserError(f"cannot start the virtual sound card: {exc}") from None
        virtual.write_alsa_config(channels=2, pcm="backtrack_demo",
                                  ports=["system:playback_1", "system:playback_2"])
        os.environ.update(virtual.env())
        device = "backtrack_demo"
    print(f"generating the demo set in {out} ...", flush=True)
    cfg = load(write_demo_set(out, device, channels=2))
    daemon = Daemon(cfg)
    stop = {"now": False}

    def on_signal(_signum, _frame) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.start()
        client = Client(cfg.control.socket)
        print(f"playing {len(cfg.songs)} songs on {device}; Ctrl-C stops. Control it from "
              f"another terminal: backtrack ctl --socket {cfg.control.socket} next", flush=True)
        client.request({"cmd": "play"})
        end = time.monotonic() + seconds if seconds else None
        tty = sys.stdout.isatty()
        last_print = 0.0
        st = {"state": ""}
        while not stop["now"] and (end is None or time.monotonic() < end):
            st = client.request({"cmd": "status"})["state"]
            line = status_line(st)
            if tty:
                sys.stdout.write("\r\033[K" + line)
                sys.stdout.flush()
            elif time.monotonic() - last_print >= 1.0:
                print(line, flush=True)
                last_print = time.monotonic()
            if st["state"] == "stopped":
                break
            time.sleep(0.1)
        if tty:
            print()
        client.close()
        ended = st["state"] == "stopped"
        print("end of the demo set" if ended else "demo stopped", flush=True)
    finally:
        daemon.stop()
        if virtual is not None:
            virtual.stop()
    return 0
