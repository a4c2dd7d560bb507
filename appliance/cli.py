"""The `backtrack` command. Each sub-command lives in its own module; this file only parses
arguments and turns expected failures into a plain message and exit status 1, so no Python
traceback ever reaches a musician."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .actions import SPELLED_COMMANDS
from .config import DEFAULT_SOCKET, ConfigError
from .devices import MIDI_APIS
from .errors import UserError

DEFAULT_CONFIG = "/etc/backtrack/config.yaml"
"""Where deploy/install.sh puts the show file, so commands on the box need no --config."""

CONFIG_HELP = f"the show file (default: $BACKTRACK_CONFIG, else {DEFAULT_CONFIG})"


def config_path(given: str | None) -> str:
    """The show file a command reads: --config, else $BACKTRACK_CONFIG, else the box's
    default. A default that is not there is named with both ways to give another, rather
    than reported as a config problem of a file the person never mentioned."""
    if given:
        return given
    env = os.environ.get("BACKTRACK_CONFIG")
    if env:
        if not Path(env).is_file():
            raise UserError(f"$BACKTRACK_CONFIG names {env}, which does not exist; "
                            "give the show file with --config FILE or $BACKTRACK_CONFIG")
        return env
    if not Path(DEFAULT_CONFIG).is_file():
        raise UserError(f"no show file: {DEFAULT_CONFIG} does not exist; "
                        "give one with --config FILE or $BACKTRACK_CONFIG")
    return DEFAULT_CONFIG


def _socket_of(config: str | None) -> str:
    """`check --live` without --socket: the show file's control socket (the socket's
    default when no show file is found, as for `ctl`)."""
    from .config import load
    from .ctl import socket_path
    try:
        path = config_path(config)
    except UserError:
        if config:
            raise
        return socket_path(None)
    return load(path).control.socket


def optional_config_path(given: str | None) -> str | None:
    """For `import`, where a show file is optional: the default only when it is there (a
    laptop has none), but a $BACKTRACK_CONFIG that names nothing is still an error."""
    if given or os.environ.get("BACKTRACK_CONFIG"):
        return config_path(given)
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


class _VersionAction(argparse.Action):
    """argparse's own version action wants the text when the parser is built; this looks
    the package metadata up only when --version is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from . import package_version
        print(f"backtrack {package_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backtrack", description="Backtrack playback appliance")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon (what systemd starts)")
    run.add_argument("--config", default=None, metavar="FILE", help=CONFIG_HELP)

    check = sub.add_parser("check", help="validate config, stem files and device")
    check.add_argument("--config", default=None, metavar="FILE", help=CONFIG_HELP)
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.add_argument("--no-device", action="store_true", help="do not probe the sound card")
    check.add_argument("--setlist", default=None, metavar="NAME",
                       help="only this setlist's songs (default: every setlist and the library)")
    check.add_argument("--live", action="store_true",
                       help="the self-test of the running daemon (stems against their "
                            "checksums, device, silent write, disk, SD card, peer, clock, "
                            "protection), through its control socket")
    check.add_argument("--socket", default=None, metavar="PATH",
                       help="with --live: the daemon's control socket (default: the show "
                            "file's control.socket)")
    check.add_argument("--write-checksums", action="store_true",
                       help="after the check, store every stem's checksum for the self-test "
                            "(selftest.checksums, default checksums.sha256 beside the show "
                            "file)")

    logp = sub.add_parser("log", help="a show's black box: timeline, JSON or plot")
    logp.add_argument("--config", default=None, metavar="FILE", help=CONFIG_HELP)
    logp.add_argument("--dir", default=None, metavar="DIR",
                      help="read this folder instead of the show file's log_dir")
    logp.add_argument("--show", type=int, default=None, metavar="N",
                      help="show number N (default: the newest; --list lists them)")
    logp.add_argument("--json", action="store_true", help="one JSON object per event")
    logp.add_argument("--plot", default=None, metavar="OUT.png",
                      help="draw lock error, drift, underruns and takeovers (needs matplotlib)")
    logp.add_argument("--list", action="store_true", help="list the shows logged")

    render = sub.add_parser("render", help="write what `run` would play to a WAV file")
    render.add_argument("--config", default=None, metavar="FILE", help=CONFIG_HELP)
    render.add_argument("--song", required=True, metavar="N|all")
    render.add_argument("--out", required=True, metavar="OUT.wav")
    render.add_argument("--script", default=None, metavar="'EVENT@POS ...'",
                        help="presses to make as the song plays: vamp@9.1, vamp2@9.1, "
                             "release@11.1#2, jump:chorus@17.1, jump:outro:now@20.3, "
                             "cancel@18 (positions bar.beat, bar or seconds: 83.5s)")

    ctl = sub.add_parser("ctl", help="control a running daemon")
    ctl.add_argument("--socket", default=None, metavar="PATH",
                     help=f"control socket (default: $BACKTRACK_SOCKET or {DEFAULT_SOCKET})")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON reply")
    ctl.add_argument("--watch", action="store_true", help="with status: a live status line")
    ctl.add_argument("command_word", metavar="COMMAND",
                     help=f"one of: {', '.join(SPELLED_COMMANDS)}")
    ctl.add_argument("args", nargs="*", metavar="ARG", help="a song number or title, a setlist")

    imp = sub.add_parser("import", help="make a song file (song.yaml) from a folder of stems")
    imp.add_argument("dir", metavar="DIR", help="the song's folder of stems")
    imp.add_argument("--config", default=None, metavar="FILE",
                     help="the show file: route to its outputs, by its routing_rules "
                          f"(default: $BACKTRACK_CONFIG, else {DEFAULT_CONFIG} if there)")
    imp.add_argument("--out", default=None, metavar="FILE",
                     help="the song file to write (default: DIR/song.yaml)")
    imp.add_argument("--force", action="store_true", help="overwrite an existing song file")

    sub.add_parser("devices", help="sound cards and ALSA PCMs, with their channel counts")

    midi = sub.add_parser("midi-ports", help="MIDI ports to read from and to send to")
    midi.add_argument("--api", choices=MIDI_APIS, default="alsa",
                      help="as midi.api in the show file (default: alsa)")

    demo = sub.add_parser("demo", help="generate a demo set and play it")
    demo.add_argument("--dir", default=None, help="where to write the demo set")
    demo.add_argument("--device", default=None, help="ALSA PCM to play on (default: first card; `virtual`: a private "
                           "virtual card, silent)")
    demo.add_argument("--seconds", type=float, default=None,
                      help="stop after this many seconds (default: play the set once)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from .service import run
            return run(config_path(args.config))
        if args.command == "check":
            if args.live:
                from .check import live_main
                sock = args.socket or _socket_of(args.config)
                return live_main(sock, as_json=args.json)
            from .check import main as check_main
            return check_main(config_path(args.config), as_json=args.json,
                              probe_device=not args.no_device, setlist=args.setlist,
                              write_checksums=args.write_checksums)
        if args.command == "log":
            from .logcmd import main as log_main
            return log_main(None if args.dir else config_path(args.config), show=args.show,
                            as_json=args.json, plot=args.plot, listing=args.list,
                            folder=args.dir)
        if args.command == "render":
            from .render import main as render_main
            return render_main(config_path(args.config), args.song, args.out, args.script)
        if args.command == "ctl":
            from .ctl import main as ctl_main
            return ctl_main(args.socket, [args.command_word, *args.args], as_json=args.json,
                            watch=args.watch)
        if args.command == "import":
            from .importer import main as import_main
            show = optional_config_path(args.config)
            if show and not args.config:
                print(f"backtrack import: routing to the outputs of {show} "
                      "(--config FILE for another show file)", file=sys.stderr)
            return import_main(args.dir, show, args.out, args.force)
        if args.command == "devices":
            from .devices import devices_main
            return devices_main()
        if args.command == "midi-ports":
            from .devices import midi_ports_main
            return midi_ports_main(args.api)
        if args.command == "demo":
            from .devtools.demo import main as demo_main
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
