"""The `backtrack` command. Each sub-command lives in its own module; this file only parses
arguments and turns expected failures into a plain message and exit status 1, so no Python
traceback ever reaches a musician."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import DEFAULT_SOCKET, ConfigError
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backtrack", description="Backtrack playback appliance")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon (what systemd starts)")
    run.add_argument("--config", required=True, metavar="FILE")

    check = sub.add_parser("check", help="validate config, stem files and device")
    check.add_argument("--config", required=True, metavar="FILE")
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument("--no-device", action="store_true", help="do not probe the sound card")
    check.add_argument("--setlist", default=None, metavar="NAME",
                       help="only this setlist's songs (default: every setlist and the library)")

    render = sub.add_parser("render", help="write what `run` would play to a WAV file")
    render.add_argument("--config", required=True, metavar="FILE")
    render.add_argument("--song", required=True, metavar="N|all")
    render.add_argument("--out", required=True, metavar="OUT.wav")

    ctl = sub.add_parser("ctl", help="control a running daemon")
    ctl.add_argument("--socket", default=None, metavar="PATH",
                     help=f"control socket (default: $BACKTRACK_SOCKET or {DEFAULT_SOCKET})")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON reply")
    ctl.add_argument("--watch", action="store_true", help="with status: a live status line")
    ctl.add_argument("words", nargs="+", metavar="play|stop|pause|next|prev|goto N|setlist NAME|setlists|status")

    imp = sub.add_parser("import", help="make a song file (song.yaml) from a folder of stems")
    imp.add_argument("dir", metavar="DIR", help="the song's folder of stems")
    imp.add_argument("--config", default=None, metavar="FILE",
                     help="the show file: route to its outputs, by its routing_rules")
    imp.add_argument("--out", default=None, metavar="FILE",
                     help="the song file to write (default: DIR/song.yaml)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing song file")

    demo = sub.add_parser("demo", help="generate a demo set and play it")
    demo.add_argument("--dir", default=None, help="where to write the demo set")
    demo.add_argument("--device", default=None, help="ALSA PCM to play on (default: first card)")
    demo.add_argument("--seconds", type=float, default=None,
                      help="stop after this many seconds (default: play the set once)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from .service import run
            return run(args.config)
        if args.command == "check":
            from .check import main as check_main
            return check_main(args.config, as_json=args.json, probe_device=not args.no_device,
                              setlist=args.setlist)
        if args.command == "render":
            from .render import main as render_main
            return render_main(args.config, args.song, args.out)
        if args.command == "ctl":
            from .ctl import main as ctl_main
            return ctl_main(args.socket, args.words, as_json=args.json, watch=args.watch)
        if args.command == "import":
            from .importer import main as import_main
            return import_main(args.dir, args.config, args.out, args.force)
        if args.command == "demo":
            from .demo import main as demo_main
            return demo_main(args.dir, args.device, args.seconds)
    except ConfigError as exc:
        print(f"backtrack: the config has {len(exc.problems)} problem(s):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"backtrack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
