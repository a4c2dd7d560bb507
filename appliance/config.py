"""The show file: YAML in, frozen dataclasses out, every mistake reported at once.

The reference for every key is `config/README.md`; keep the two in step. Checks that need
the stem files or the sound card (channel counts, lengths, rates) live in `check`, not
here: loading a config never touches audio files, so the daemon can start (and say what is
wrong) even when a USB stick with the media is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from . import library as library_mod
from .actions import ACTIONS, Action, parse_action, resolve_goto
from .songfile import AFTER, MidiMessage, Song, Stem, read_song, resolve, route
from .structfile import SHOW_KEYS as STRUCTURE_SHOW_KEYS
from .structfile import Defaults, read_defaults
from .yamlnodes import ConfigError, NodeReader, Problem, compose

__all__ = [
    "Action", "Config", "ConfigError", "ControlConfig", "Device", "EngineConfig", "Footswitch",
    "Led", "MidiConfig", "MidiMapping", "MidiMessage", "OscConfig", "PeerConfig", "Problem",
    "RemoteConfig", "SelfTestConfig", "ShowLogConfig", "Song", "Stem",
    "load", "parse_action", "ACTIONS", "AFTER", "FORMATS", "RATES",
]

FORMATS = ("S16_LE", "S24_3LE", "S32_LE", "FLOAT_LE")
RATES = (22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
# BCM GPIOs on the 40-pin header. 0 and 1 are the HAT ID EEPROM bus and are left alone.
BCM_PINS = range(2, 28)
DEFAULT_SOCKET = "/run/backtrack/control.sock"
DEFAULT_LOG_DIR = Path("/var/lib/backtrack/shows")
DEFAULT_CHECKSUMS = "checksums.sha256"


@dataclass(frozen=True)
class Device:
    name: str = "default"
    channels: int = 2
    rate: int = 48000
    format: str = "S32_LE"
    period: int = 256
    periods: int = 3

    @property
    def buffer_frames(self) -> int:
        return self.period * self.periods


@dataclass(frozen=True)
class EngineConfig:
    readahead: float = 2.0          # seconds decoded ahead of the writer
    realtime_priority: int = 70     # SCHED_FIFO priority of the writer thread; 0 = do not ask
    fade_ms: float = 5.0            # stop/pause fade length
    cache_dir: Path | None = None   # resampled stems; default: .backtrack-cache beside the config
    writer_cpu: str | int = "auto"  # CPU the writer is pinned to: "auto" (the last), "none", N


@dataclass(frozen=True)
class ControlConfig:
    socket: str = DEFAULT_SOCKET


@dataclass(frozen=True)
class Footswitch:
    pin: int
    press: Action | None = None
    hold: Action | None = None
    double: Action | None = None
    hold_time: float = 0.8
    bounce_ms: float = 20.0
    double_ms: float = 350.0


@dataclass(frozen=True)
class Led:
    pin: int | None = None
    rgb: tuple[int, int, int] | None = None
    pwm: bool = True


@dataclass(frozen=True)
class MidiMapping:
    kind: str  # note | cc | program
    number: int  # note/cc number 0-127, program 1-128
    action: Action
    value: int | None = None  # cc value to match; None: any value >= 64
    channel: int | None = None  # 1-16, None: any
    trim: str | None = None  # a cc whose value sets this stem's or output's live trim


@dataclass(frozen=True)
class MidiConfig:
    api: str = "alsa"
    in_port: str | None = None
    mappings: tuple[MidiMapping, ...] = ()
    out_port: str | None = None
    clock: bool = False
    mtc: bool = False
    mtc_fps: int = 25
    offset_ms: float = 0.0  # clock/MTC later (+) or earlier (-) than the audio position


@dataclass(frozen=True)
class PeerConfig:
    role: str = "leader"
    priority: int = 1                # takeover order among followers, 1 first
    id: int | None = None            # unit id on the wire; None: a random one per start
    listen: str = "0.0.0.0:47800"
    peers: tuple[str, ...] = ()
    key_file: Path | None = None
    mode: str = "unmute"
    pilot_output: int | None = None  # 0-based device channel
    pilot_hz: float = 1000.0
    timeout_ms: float | None = None  # None ("auto"): learned from the link (peer.detector)
    heartbeat_ms: float = 2.0        # STATE every this often (and at once on a change)
    heartbeat_out_pin: int | None = None
    heartbeat_in_pin: int | None = None


@dataclass(frozen=True)
class ShowLogConfig:
    """How big the black-box show log may grow and how often it samples (appliance.showlog)."""

    max_file_mb: float = 16.0        # a show file continues in a next part beyond this
    max_total_mb: float = 256.0      # the oldest show files are deleted beyond this
    sample_s: float = 1.0            # lock error, drift, temperature: one sample this often
    new_show_after_min: float = 30.0  # nothing played this long: the next play is a new show


@dataclass(frozen=True)
class SelfTestConfig:
    """The pre-show self-test (appliance.selftest)."""

    at_start: bool = True
    checksums: Path | None = None    # the stems' checksum manifest; None: beside the config
    min_free_mb: float = 200.0       # free disk below this (log_dir, cache) is a fault
    max_clock_offset_ms: float = 500.0  # wall clocks of a pair further apart: a fault
    peer_wait_s: float = 10.0        # at start: how long the pair may take to find itself


@dataclass(frozen=True)
class RemoteConfig:
    """The phone/tablet page and its HTTP API (appliance/controls/remote.py)."""

    listen: str = "127.0.0.1:8080"
    pin_file: Path | None = None     # None: the page is read-only (no control at all)
    update_hz: float = 4.0           # WebSocket status pushes per second (and on every change)
    max_clients: int = 200           # open WebSocket connections; more are refused


@dataclass(frozen=True)
class OscConfig:
    """OSC in and the status broadcast (appliance/controls/osc.py)."""

    listen: str = "0.0.0.0:9000"
    status_rate_hz: float = 10.0     # status to each subscriber this often; 0: no broadcast
    max_subscribers: int = 8
    subscription_s: float = 60.0     # a subscription lasts this long unless renewed
    allow: tuple[str, ...] = ()      # networks allowed to send (CIDR); empty: any


@dataclass(frozen=True)
class Config:
    """`songs` is the setlist in use (what the engine, the controls and the peer see);
    `setlists` every setlist by name, `library` every song that loaded."""

    path: Path
    device: Device
    outputs: dict[str, tuple[int, ...]]  # name -> 0-based channels
    songs: tuple[Song, ...]
    engine: EngineConfig = field(default_factory=EngineConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    footswitches: tuple[Footswitch, ...] = ()
    led: Led | None = None
    midi: MidiConfig | None = None
    peer: PeerConfig | None = None
    remote: RemoteConfig | None = None
    osc: OscConfig | None = None
    state_file: Path | None = None
    resume: bool = True  # with a state_file: start cued at the song current at the last stop
    warnings: tuple[Problem, ...] = ()
    setlist: str = library_mod.IMPLICIT
    setlists: dict[str, tuple[Song, ...]] = field(default_factory=dict)
    library: tuple[Song, ...] = ()
    library_dirs: tuple[Path, ...] = ()
    routing_rules: tuple[tuple[str, str], ...] = ()  # (pattern, output) for `import`
    log_dir: Path = DEFAULT_LOG_DIR
    show_log: ShowLogConfig = field(default_factory=ShowLogConfig)
    selftest: SelfTestConfig = field(default_factory=SelfTestConfig)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def checksums_file(self) -> Path:
        """The stems' checksum manifest (`backtrack check --write-checksums` writes it)."""
        return self.selftest.checksums or (self.base_dir / DEFAULT_CHECKSUMS)

    @property
    def cache_dir(self) -> Path:
        return self.engine.cache_dir or (self.base_dir / ".backtrack-cache")

    def with_setlist(self, name: str) -> Config:
        """The same show playing another setlist (KeyError when there is none of that name)."""
        return replace(self, songs=self.setlists[name], setlist=name)


TOP_KEYS = ("device", "outputs", "songs", "library", "setlists", "setlist", "routing_rules",
            "engine", "control", "footswitches", "led", "midi", "peer", "remote", "osc",
            "state_file", "resume", "log_dir", "show_log", "selftest", *STRUCTURE_SHOW_KEYS)


def load(path: str | Path) -> Config:
    """Load and validate a show file (and the song files of its library); raises
    ConfigError listing every problem of every file."""
    path = Path(path).expanduser().absolute()
    r = NodeReader(path)
    root = compose(path, r)
    if root is None:
        raise ConfigError(r.problems)
    top = r.mapping(root, "", TOP_KEYS, required=("device", "outputs"))
    if top is None:
        raise ConfigError(r.problems)
    device = _device(r, top.get("device"))
    outputs = _outputs(r, top.get("outputs"), device)
    show = _show(r, top, outputs, path.parent, device.rate)
    engine = _engine(r, top.get("engine"), path.parent)
    control = _control(r, top.get("control"))
    footswitches = _footswitches(r, top.get("footswitches"), show)
    led = _led(r, top.get("led"))
    midi = _midi(r, top.get("midi"), show)
    peer = _peer(r, top.get("peer"), path.parent, device)
    remote = _remote(r, top.get("remote"), path.parent)
    osc = _osc(r, top.get("osc"))
    _check_ports(r, top, osc, peer)
    state_file = r.text(top.get("state_file"), "state_file", default=None)
    resume = r.boolean(top.get("resume"), "resume", default=True)
    rules = _routing_rules(r, top.get("routing_rules"), outputs)
    log_dir = r.text(top.get("log_dir"), "log_dir", default=None)
    show_log = _show_log(r, top.get("show_log"))
    selftest = _selftest(r, top.get("selftest"), path.parent)
    _check_pins(r, top, footswitches, led, peer)
    if r.errors:
        raise ConfigError(r.problems)
    return Config(
        path=path, device=device, outputs=outputs, songs=show.setlists[show.setlist],
        engine=engine, control=control,
        footswitches=footswitches, led=led, midi=midi, peer=peer, remote=remote, osc=osc,
        state_file=resolve(path.parent, state_file) if state_file else None,
        resume=bool(resume),
        warnings=tuple(p for p in r.problems if p.severity != "error"),
        setlist=show.setlist, setlists=show.setlists, library=show.library,
        library_dirs=show.dirs, routing_rules=rules,
        log_dir=resolve(path.parent, log_dir) if log_dir else DEFAULT_LOG_DIR,
        show_log=show_log, selftest=selftest,
    )


def _show_log(r: NodeReader, node: yaml.Node | None) -> ShowLogConfig:
    s = r.mapping(node, "show_log", ("max_file_mb", "max_total_mb", "sample_s",
                                     "new_show_after_min"))
    d = ShowLogConfig()
    if not s:
        return d
    file_mb = r.number(s.get("max_file_mb"), "show_log.max_file_mb", 0.1, 1024,
                       default=d.max_file_mb) or d.max_file_mb
    total_mb = r.number(s.get("max_total_mb"), "show_log.max_total_mb", 1, 65536,
                        default=d.max_total_mb) or d.max_total_mb
    if total_mb < file_mb:
        r.error(s.get("max_total_mb"), "show_log.max_total_mb",
                f"{total_mb:g} is less than show_log.max_file_mb ({file_mb:g}): the folder "
                "must hold at least one whole file")
    return ShowLogConfig(
        max_file_mb=file_mb, max_total_mb=total_mb,
        sample_s=r.number(s.get("sample_s"), "show_log.sample_s", 0.1, 60,
                          default=d.sample_s) or d.sample_s,
        new_show_after_min=r.number(s.get("new_show_after_min"), "show_log.new_show_after_min",
                                    1, 1440, default=d.new_show_after_min)
        or d.new_show_after_min)


def _selftest(r: NodeReader, node: yaml.Node | None, base: Path) -> SelfTestConfig:
    s = r.mapping(node, "selftest", ("at_start", "checksums", "min_free_mb",
                                     "max_clock_offset_ms", "peer_wait_s"))
    d = SelfTestConfig()
    if not s:
        return d
    sums = r.text(s.get("checksums"), "selftest.checksums", default=None)
    at_start = r.boolean(s.get("at_start"), "selftest.at_start", default=d.at_start)
    return SelfTestConfig(
        at_start=bool(at_start) if at_start is not None else d.at_start,
        checksums=resolve(base, sums) if sums else None,
        min_free_mb=r.number(s.get("min_free_mb"), "selftest.min_free_mb", 0, 10**7,
                             default=d.min_free_mb) if "min_free_mb" in s else d.min_free_mb,
        max_clock_offset_ms=r.number(s.get("max_clock_offset_ms"),
                                     "selftest.max_clock_offset_ms", 1, 5000,
                                     default=d.max_clock_offset_ms) or d.max_clock_offset_ms,
        peer_wait_s=r.number(s.get("peer_wait_s"), "selftest.peer_wait_s", 0, 120,
                             default=d.peer_wait_s) if "peer_wait_s" in s else d.peer_wait_s)


def load_outputs(path: str | Path) -> tuple[dict[str, tuple[int, ...]],
                                             tuple[tuple[str, str], ...]]:
    """Only a show file's outputs and routing_rules, for `backtrack import`: a show whose
    setlist already names the song being imported cannot load whole until that song
    exists. Raises ConfigError with the problems of those keys (and of the file itself)."""
    path = Path(path).expanduser().absolute()
    r = NodeReader(path)
    root = compose(path, r)
    top = r.mapping(root, "", TOP_KEYS, required=("device", "outputs")) if root else None
    if top is None:
        raise ConfigError(r.problems)
    outputs = _outputs(r, top.get("outputs"), _device(r, top.get("device")))
    rules = _routing_rules(r, top.get("routing_rules"), outputs)
    if r.errors:
        raise ConfigError(r.errors)
    return outputs, rules


@dataclass
class _Show:
    setlists: dict[str, tuple[Song, ...]]
    setlist: str
    library: tuple[Song, ...]
    dirs: tuple[Path, ...]


def _show(r: NodeReader, top: dict[str, yaml.Node], outputs: dict[str, tuple[int, ...]],
          base: Path, rate: int) -> _Show:
    """Inline songs, the library's song files and the setlists naming them. Problems of
    the song files go into `r` with their own file and line: errors when a setlist uses
    the song, warnings when none does. The show's structure keys (click, ltc, ...) are
    every song's defaults."""
    if "songs" not in top and "library" not in top:
        r.error(None, "songs", "the show has no songs: give `library:` (a folder of song "
                "folders, each with a song.yaml) or an inline `songs:` list")
    defaults = read_defaults(r, top, outputs, base)
    inline = _inline_songs(r, top.get("songs"), outputs, base, rate, defaults)
    dirs = _library_dirs(r, top.get("library"), base)
    read = library_mod.load_library(dirs, outputs, rate=rate, defaults=defaults)
    songs = inline + [ls.song for ls in read if ls.song is not None]
    lib = library_mod.Library(songs)
    if "setlists" in top:
        setlists, used = library_mod.read_setlists(r, top["setlists"], lib)
    else:
        setlists = {library_mod.IMPLICIT: tuple(songs)}
        used = {id(s) for s in songs}
    for ls in read:
        if ls.song is not None and id(ls.song) in used:
            r.problems.extend(ls.problems)
        else:
            r.problems.extend(library_mod.demote(ls.problems, "no setlist uses this song"))
    _duplicate_titles(r, songs, inline)
    names = list(setlists)
    chosen = r.text(top.get("setlist"), "setlist", default=None,
                    choices=names if names else None)
    if dirs and not songs and not r.errors:
        r.error(top.get("library"), "library", "no song files (*/song.yaml) found in "
                f"{', '.join(str(d) for d in dirs)}; `backtrack import FOLDER` makes one "
                "from a folder of stems")
    if not names:
        if "setlists" in top and isinstance(top["setlists"], yaml.MappingNode):
            r.error(top["setlists"], "setlists", "no setlist is defined; add one, e.g. "
                    "`friday: [Opener, Ballad]`")
        setlists = {library_mod.IMPLICIT: ()}
        names = [library_mod.IMPLICIT]
    return _Show(setlists, chosen or names[0], tuple(songs), tuple(dirs))


def _duplicate_titles(r: NodeReader, songs: list[Song], inline: list[Song]) -> None:
    """Two songs with one title: a setlist naming that title is refused (read_setlists);
    otherwise a warning, since songs are still told apart by number or folder name."""
    seen: dict[str, Song] = {}
    for s in songs:
        first = seen.setdefault(s.title, s)
        if first is s:
            continue
        if s.file is None:
            where = f"song {inline.index(first) + 1}" if first.file is None else str(first.file)
            r.problems.append(Problem(r.file, s.line, f"songs[{inline.index(s)}].title",
                                      f"duplicate title '{s.title}' (also {where}); songs are "
                                      "told apart by number", "warning"))
        else:
            where = str(first.file) if first.file else f"{r.file}, line {first.line}"
            r.problems.append(Problem(str(s.file), s.line, "title",
                                      f"'{s.title}' is also the title of {where}; a setlist "
                                      "must name these by their folder names", "warning"))


def _inline_songs(r: NodeReader, node: yaml.Node | None, outputs: dict[str, tuple[int, ...]],
                  base: Path, rate: int, defaults: Defaults) -> list[Song]:
    items = r.sequence(node, "songs")
    if items is None:
        return []
    if not items:
        r.error(node, "songs", "the setlist is empty; add at least one song")
        return []
    songs: list[Song] = []
    for i, snode in enumerate(items):
        song = read_song(r, snode, f"songs[{i}]", outputs, base, default_title=f"song {i + 1}",
                         rate=rate, defaults=defaults)
        if song is not None:
            songs.append(song)
    return songs


def _library_dirs(r: NodeReader, node: yaml.Node | None, base: Path) -> list[Path]:
    if node is None:
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    dirs = []
    for i, item in enumerate(items):
        key = "library" if item is node else f"library[{i}]"
        text = r.text(item, key)
        if text is None:
            continue
        d = resolve(base, text)
        if not d.is_dir():
            r.error(item, key, f"{d} is not a folder; give the folder that holds one folder "
                    "per song (each with a song.yaml)")
            continue
        dirs.append(d)
    return dirs


def _routing_rules(r: NodeReader, node: yaml.Node | None,
                   outputs: dict[str, tuple[int, ...]]) -> tuple[tuple[str, str], ...]:
    """`routing_rules: {"guide|cues": cues}`: for `backtrack import`, a stem whose file
    name matches the pattern (a regular expression, case ignored) goes to that output."""
    if node is None:
        return ()
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "routing_rules", "expected patterns and outputs, e.g. "
                "`{\"guide|cues\": cues}`")
        return ()
    out = []
    for knode, vnode in node.value:
        pattern = str(knode.value)
        key = f"routing_rules.{pattern}"
        try:
            re.compile(pattern, re.I)
        except re.error as exc:
            r.error(knode, key, f"not a valid pattern: {exc}")
            continue
        target = r.text(vnode, key)
        if target is None:
            continue
        if route(target, outputs) is None:
            r.error(vnode, key, f"no output named '{target}'; outputs are: "
                    f"{', '.join(outputs)}")
            continue
        out.append((pattern, target))
    return tuple(out)


def _device(r: NodeReader, node: yaml.Node | None) -> Device:
    d = r.mapping(node, "device", ("name", "channels", "rate", "format", "period", "periods"))
    if d is None:
        return Device()
    dflt = Device()
    return Device(
        name=r.text(d.get("name"), "device.name", default=dflt.name) or dflt.name,
        channels=r.integer(d.get("channels"), "device.channels", 1, 64, default=dflt.channels)
        or dflt.channels,
        rate=r.integer(d.get("rate"), "device.rate", 0, 0, default=dflt.rate, choices=RATES)
        or dflt.rate,
        format=r.text(d.get("format"), "device.format", default=dflt.format, choices=FORMATS)
        or dflt.format,
        period=r.integer(d.get("period"), "device.period", 16, 16384, default=dflt.period)
        or dflt.period,
        periods=r.integer(d.get("periods"), "device.periods", 2, 32, default=dflt.periods)
        or dflt.periods,
    )


def _channels_known(r: NodeReader) -> bool:
    """False when device.channels was itself wrong: the default stood in for it, and
    channel numbers checked against that default would only add misleading errors."""
    return not any(p.key == "device.channels" for p in r.errors)


def _outputs(r: NodeReader, node: yaml.Node | None, device: Device) -> dict[str, tuple[int, ...]]:
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "outputs", "expected a mapping of output names to channel numbers, "
                "e.g. `click: 1` or `tracks: [3, 4]`")
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for knode, vnode in node.value:
        name = str(knode.value)
        key = f"outputs.{name}"
        if name in out:
            r.error(knode, key, "appears twice")
            continue
        items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        chans: list[int] = []
        for i, item in enumerate(items):
            ikey = key if len(items) == 1 and not isinstance(vnode, yaml.SequenceNode) \
                else f"{key}[{i}]"
            ch = r.integer(item, ikey, 1, 64)
            if ch is None:
                continue
            if ch > device.channels and _channels_known(r):
                r.error(item, ikey, f"channel {ch} is beyond the device's "
                        f"{device.channels} channels (device.channels); valid: 1 to "
                        f"{device.channels}")
                continue
            chans.append(ch - 1)
        if not items:
            r.error(vnode, key, "names no channel; give a channel number or a list of them")
        out[name] = tuple(chans)
    if not out:
        r.error(node, "outputs", "no outputs are defined; name at least one, e.g. `click: 1`")
    return out


def _engine(r: NodeReader, node: yaml.Node | None, base: Path) -> EngineConfig:
    e = r.mapping(node, "engine", ("readahead", "realtime_priority", "fade_ms", "cache_dir",
                                   "writer_cpu"))
    if not e:
        return EngineConfig()
    d = EngineConfig()
    cache = r.text(e.get("cache_dir"), "engine.cache_dir", default=None)
    return EngineConfig(
        readahead=r.number(e.get("readahead"), "engine.readahead", 0.2, 30,
                           default=d.readahead) or d.readahead,
        realtime_priority=r.integer(e.get("realtime_priority"), "engine.realtime_priority",
                                    0, 99, default=d.realtime_priority) or 0,
        fade_ms=r.number(e.get("fade_ms"), "engine.fade_ms", 0.5, 10, default=d.fade_ms)
        or d.fade_ms,
        cache_dir=resolve(base, cache) if cache else None,
        writer_cpu=_writer_cpu(r, e.get("writer_cpu"), d.writer_cpu),
    )


def _writer_cpu(r: NodeReader, node: yaml.Node | None, default: str | int) -> str | int:
    if node is None:
        return default
    if isinstance(node, yaml.ScalarNode) and node.value in ("auto", "none"):
        return node.value
    if isinstance(node, yaml.ScalarNode) and node.value.isdigit():
        return r.integer(node, "engine.writer_cpu", 0, 1023, default=default) or 0
    got = node.value if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
    r.error(node, "engine.writer_cpu", f"expected auto, none or a CPU number (0, 1, ...), "
                                       f"got {got}")
    return default


def _control(r: NodeReader, node: yaml.Node | None) -> ControlConfig:
    c = r.mapping(node, "control", ("socket",))
    if not c:
        return ControlConfig()
    return ControlConfig(socket=r.text(c.get("socket"), "control.socket",
                                       default=DEFAULT_SOCKET) or DEFAULT_SOCKET)


def _action(r: NodeReader, node: yaml.Node | None, key: str, show: _Show) -> Action | None:
    if node is None:
        return None
    text = r.text(node, key)
    if text is None:
        return None
    action = parse_action(text, titles=True)
    if action is None:
        r.error(node, key, f"unknown action '{text}'; valid: {', '.join(ACTIONS)}")
        return None
    nsongs = max((len(s) for s in show.setlists.values()), default=0)
    if action.name == "goto" and isinstance(action.arg, int) \
            and not 1 <= action.arg <= max(nsongs, 1):
        r.error(node, key, f"there is no song {action.arg}; songs are numbered 1 to {nsongs}")
        return None
    if action.name == "goto" and isinstance(action.arg, str) and not any(
            resolve_goto(action, [s.title for s in songs])[0] for songs in show.setlists.values()):
        r.error(node, key, f"no setlist has a song titled '{action.arg}'")
        return None
    if action.name == "setlist" and action.arg not in show.setlists:
        r.error(node, key, f"there is no setlist '{action.arg}'; setlists: "
                f"{', '.join(show.setlists)}")
        return None
    return action


def _footswitches(r: NodeReader, node: yaml.Node | None, show: _Show) -> tuple[Footswitch, ...]:
    items = r.sequence(node, "footswitches")
    if not items:
        return ()
    out = []
    for i, fnode in enumerate(items):
        key = f"footswitches[{i}]"
        f = r.mapping(fnode, key, ("pin", "press", "hold", "double", "hold_time", "bounce_ms",
                                   "double_ms"), required=("pin",))
        if f is None:
            continue
        pin = _pin(r, f.get("pin"), f"{key}.pin")
        acts = {k: _action(r, f.get(k), f"{key}.{k}", show) for k in ("press", "hold", "double")}
        if not any(k in f for k in ("press", "hold", "double")):
            r.error(fnode, key, "a footswitch needs at least one of press, hold, double")
        d = Footswitch(pin=0)
        fs = Footswitch(
            pin=pin if pin is not None else -1, **acts,
            hold_time=r.number(f.get("hold_time"), f"{key}.hold_time", 0.2, 5,
                               default=d.hold_time) or d.hold_time,
            bounce_ms=r.number(f.get("bounce_ms"), f"{key}.bounce_ms", 0, 200,
                               default=d.bounce_ms),
            double_ms=r.number(f.get("double_ms"), f"{key}.double_ms", 100, 1000,
                               default=d.double_ms) or d.double_ms,
        )
        out.append(fs)
    return tuple(out)


def _pin(r: NodeReader, node: yaml.Node | None, key: str) -> int | None:
    if node is None:
        return None
    pin = r.integer(node, key, 0, 10_000)
    if pin is not None and pin not in BCM_PINS:
        r.error(node, key, f"GPIO{pin} is not a usable BCM GPIO; valid: 2 to 27")
        return None
    return pin


def _led(r: NodeReader, node: yaml.Node | None) -> Led | None:
    m = r.mapping(node, "led", ("pin", "rgb", "pwm"))
    if m is None:
        return None
    if ("pin" in m) == ("rgb" in m):
        r.error(node, "led", "give either pin (one LED) or rgb: [r, g, b] (an RGB LED)")
        return None
    pwm = r.boolean(m.get("pwm"), "led.pwm", default=True)
    if "pin" in m:
        return Led(pin=_pin(r, m["pin"], "led.pin"), pwm=bool(pwm))
    items = r.sequence(m["rgb"], "led.rgb") or []
    if len(items) != 3:
        r.error(m["rgb"], "led.rgb", "give three pins: [red, green, blue]")
        return None
    pins = [_pin(r, n, f"led.rgb[{i}]") for i, n in enumerate(items)]
    if any(p is None for p in pins):
        return None
    return Led(rgb=tuple(pins), pwm=bool(pwm))  # type: ignore[arg-type]


def _midi(r: NodeReader, node: yaml.Node | None, show: _Show) -> MidiConfig | None:
    m = r.mapping(node, "midi", ("api", "in", "map", "out"))
    if m is None:
        return None
    api = r.text(m.get("api"), "midi.api", default="alsa", choices=("alsa", "jack")) or "alsa"
    in_port = None
    inn = r.mapping(m.get("in"), "midi.in", ("port",), required=("port",))
    if inn:
        in_port = r.text(inn.get("port"), "midi.in.port")
    mappings = []
    for i, mnode in enumerate(r.sequence(m.get("map"), "midi.map") or []):
        key = f"midi.map[{i}]"
        mm = r.mapping(mnode, key, ("note", "cc", "program", "value", "channel", "action",
                                    "trim"))
        if mm is None:
            continue
        if ("action" in mm) == ("trim" in mm):
            r.error(mnode, key, "give exactly one of action or trim (a cc that sets a stem's "
                    "or output's live trim: {cc: 7, trim: guide})")
            continue
        kinds = [k for k in ("note", "cc", "program") if k in mm]
        if len(kinds) != 1:
            r.error(mnode, key, "give exactly one of note, cc or program")
            continue
        kind = kinds[0]
        lo, hi = (1, 128) if kind == "program" else (0, 127)
        num = r.integer(mm[kind], f"{key}.{kind}", lo, hi)
        value = r.integer(mm.get("value"), f"{key}.value", 0, 127, default=None)
        if value is not None and kind != "cc":
            r.error(mm.get("value"), f"{key}.value", "value only applies to cc mappings")
        channel = r.integer(mm.get("channel"), f"{key}.channel", 1, 16, default=None)
        trim = r.text(mm.get("trim"), f"{key}.trim", default=None)
        if trim is not None and (kind != "cc" or value is not None):
            r.error(mm["trim"], f"{key}.trim", "trim goes with a cc and no value (the cc's "
                    "value sets the level)")
            continue
        action = Action("trim", trim) if trim is not None else \
            _action(r, mm.get("action"), f"{key}.action", show)
        if num is not None and action is not None:
            mappings.append(MidiMapping(kind, num, action, value, channel, trim))
    out_port, clock, mtc, fps, offset = None, False, False, 25, 0.0
    out = r.mapping(m.get("out"), "midi.out", ("port", "clock", "mtc", "mtc_fps", "offset_ms"),
                    required=("port",))
    if out:
        out_port = r.text(out.get("port"), "midi.out.port")
        clock = bool(r.boolean(out.get("clock"), "midi.out.clock", default=False))
        mtc = bool(r.boolean(out.get("mtc"), "midi.out.mtc", default=False))
        fps = r.integer(out.get("mtc_fps"), "midi.out.mtc_fps", 24, 30, default=25,
                        choices=(24, 25, 30)) or 25
        offset = r.number(out.get("offset_ms"), "midi.out.offset_ms", -200, 200, default=0.0)
    return MidiConfig(api=api, in_port=in_port, mappings=tuple(mappings), out_port=out_port,
                      clock=clock, mtc=mtc, mtc_fps=fps, offset_ms=float(offset or 0.0))


_HOSTPORT = re.compile(r"^\[?([0-9A-Za-z.:_-]+?)\]?:(\d{1,5})$")


def _hostport(r: NodeReader, node: yaml.Node | None, key: str) -> str | None:
    text = r.text(node, key, default=None)
    if text is None:
        return None
    m = _HOSTPORT.match(text)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        r.error(node, key, f"'{text}' is not host:port, e.g. 192.168.50.12:47800")
        return None
    return text


def _names_itself(peer: str, listen: str) -> bool:
    """Whether `peer` (host:port) is this unit's own `listen` address: a copied config that
    sends its heartbeats to itself protects nothing."""
    host, _, port = peer.rpartition(":")
    lhost, _, lport = listen.rpartition(":")
    host, lhost = host.strip("[]").lower(), lhost.strip("[]").lower()
    if port != lport:
        return False
    if host == lhost or host in ("localhost", "::1") or host.startswith("127."):
        return True
    return lhost in ("0.0.0.0", "::", "") and _is_local_address(host)


def _is_local_address(host: str) -> bool:
    """Whether `host` (a numeric address) belongs to this machine: binding to it works only
    then. No name lookup and no traffic, so a venue without DNS does not slow start-up."""
    import ipaddress
    import socket
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return False  # a host name: not resolved here
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


def _peer(r: NodeReader, node: yaml.Node | None, base: Path, device: Device) -> PeerConfig | None:
    p = r.mapping(node, "peer", ("role", "priority", "id", "listen", "peers", "key_file",
                                 "mode", "pilot", "timeout_ms", "heartbeat_ms", "heartbeat"),
                  required=("role", "key_file"))
    if p is None:
        return None
    d = PeerConfig()
    peers = []
    for i, n in enumerate(r.sequence(p.get("peers"), "peer.peers") or []):
        hp = _hostport(r, n, f"peer.peers[{i}]")
        if hp:
            peers.append(hp)
    key_file = r.text(p.get("key_file"), "peer.key_file")
    mode = r.text(p.get("mode"), "peer.mode", default="unmute", choices=("unmute", "switcher"))
    pilot_output, pilot_hz = None, d.pilot_hz
    pilot = r.mapping(p.get("pilot"), "peer.pilot", ("output", "hz"), required=("output",))
    if pilot:
        ch = r.integer(pilot.get("output"), "peer.pilot.output", 1,
                       device.channels if _channels_known(r) else 64)
        pilot_output = ch - 1 if ch is not None else None
        pilot_hz = r.number(pilot.get("hz"), "peer.pilot.hz", 20, 20000, default=d.pilot_hz)
    if mode == "switcher" and pilot_output is None:
        r.error(p.get("mode"), "peer.pilot", "switcher mode needs pilot: {output: N}")
    hb_out = hb_in = None
    hb = r.mapping(p.get("heartbeat"), "peer.heartbeat", ("out_pin", "in_pin"))
    if hb:
        hb_out = _pin(r, hb.get("out_pin"), "peer.heartbeat.out_pin")
        hb_in = _pin(r, hb.get("in_pin"), "peer.heartbeat.in_pin")
    role = r.text(p.get("role"), "peer.role", choices=("leader", "follower")) or d.role
    if role == "follower" and "priority" not in p:
        r.warn(node, "peer.priority", "not set on a follower: it defaults to 1; with two or "
               "more followers give each its own (1 takes over first, then 2, ...)")
    listen = _hostport(r, p.get("listen"), "peer.listen") or d.listen
    for i, hp in enumerate(peers):
        if _names_itself(hp, listen):
            r.warn(r.sequence(p.get("peers"), "peer.peers")[i], f"peer.peers[{i}]",
                   f"'{hp}' is this unit's own listen address ({listen}): name the other "
                   "units here")
    timeout_ms = None
    tnode = p.get("timeout_ms")
    if not (isinstance(tnode, yaml.ScalarNode) and tnode.value == "auto"):
        timeout_ms = r.number(tnode, "peer.timeout_ms", 5, 5000, default=None)
    return PeerConfig(
        role=role,
        priority=r.integer(p.get("priority"), "peer.priority", 1, 99, default=1) or 1,
        id=r.integer(p.get("id"), "peer.id", 1, 65535, default=None),
        listen=listen,
        peers=tuple(peers),
        key_file=resolve(base, key_file) if key_file else None,
        mode=mode or "unmute",
        pilot_output=pilot_output,
        pilot_hz=pilot_hz or d.pilot_hz,
        timeout_ms=timeout_ms,
        heartbeat_ms=r.number(p.get("heartbeat_ms"), "peer.heartbeat_ms", 1, 10,
                              default=d.heartbeat_ms) or d.heartbeat_ms,
        heartbeat_out_pin=hb_out,
        heartbeat_in_pin=hb_in,
    )


def _remote(r: NodeReader, node: yaml.Node | None, base: Path) -> RemoteConfig | None:
    """`remote:` (off when absent). The address is required: the page is reachable from
    the stage network only where the show file says so. Without `pin_file` the page is
    read-only, which is said as a warning so nobody finds out at soundcheck."""
    m = r.mapping(node, "remote", ("listen", "pin_file", "update_hz", "max_clients"),
                  required=("listen",))
    if m is None:
        return None
    d = RemoteConfig()
    pin_file = r.text(m.get("pin_file"), "remote.pin_file", default=None)
    if pin_file is None:
        r.warn(node, "remote.pin_file", "not set: the page shows the show but nobody can "
               "control it; give a file holding the PIN (4 or more characters)")
    return RemoteConfig(
        listen=_hostport(r, m.get("listen"), "remote.listen") or d.listen,
        pin_file=resolve(base, pin_file) if pin_file else None,
        update_hz=r.number(m.get("update_hz"), "remote.update_hz", 1, 20,
                           default=d.update_hz) or d.update_hz,
        max_clients=r.integer(m.get("max_clients"), "remote.max_clients", 1, 1000,
                              default=d.max_clients) or d.max_clients,
    )


def _osc(r: NodeReader, node: yaml.Node | None) -> OscConfig | None:
    """`osc:` (off when absent): where OSC is received, and the status broadcast."""
    m = r.mapping(node, "osc", ("listen", "status_rate_hz", "max_subscribers",
                                "subscription_s", "allow"), required=("listen",))
    if m is None:
        return None
    import ipaddress
    d = OscConfig()
    allow = []
    for i, n in enumerate(r.sequence(m.get("allow"), "osc.allow") or []):
        text = r.text(n, f"osc.allow[{i}]")
        if text is None:
            continue
        try:
            allow.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            r.error(n, f"osc.allow[{i}]", f"'{text}' is not an address or network; write "
                    "e.g. 192.168.50.20 or 192.168.50.0/24")
    rate = r.number(m.get("status_rate_hz"), "osc.status_rate_hz", 0, 50,
                    default=d.status_rate_hz)
    return OscConfig(
        listen=_hostport(r, m.get("listen"), "osc.listen") or d.listen,
        status_rate_hz=d.status_rate_hz if rate is None else rate,
        max_subscribers=r.integer(m.get("max_subscribers"), "osc.max_subscribers", 1, 64,
                                  default=d.max_subscribers) or d.max_subscribers,
        subscription_s=r.number(m.get("subscription_s"), "osc.subscription_s", 5, 86400,
                                default=d.subscription_s) or d.subscription_s,
        allow=tuple(allow),
    )


def _check_ports(r: NodeReader, top: dict, osc: OscConfig | None,
                 peer: PeerConfig | None) -> None:
    """The web page (TCP) may share a port number with OSC or the peer (UDP); OSC and the
    peer may not: the second to bind would fail at start, on stage."""
    if osc is None or peer is None:
        return
    if osc.listen.rpartition(":")[2] == peer.listen.rpartition(":")[2]:
        node = top.get("osc")
        listen = next((v for k, v in node.value if k.value == "listen"), node) \
            if isinstance(node, yaml.MappingNode) else node
        r.error(listen, "osc.listen", f"port {osc.listen.rpartition(':')[2]} is "
                f"also peer.listen ({peer.listen}); give OSC another port")


def _check_pins(r: NodeReader, top: dict, footswitches: tuple[Footswitch, ...], led: Led | None,
                peer: PeerConfig | None) -> None:
    """A pin wired to two things is a wiring bug that would show up only on stage."""
    used: dict[int, str] = {}

    def claim(pin: int | None, what: str, node: yaml.Node | None) -> None:
        if pin is None or pin < 0:
            return
        if pin in used:
            r.error(node, what, f"GPIO{pin} is already used by {used[pin]}")
        else:
            used[pin] = what

    fs_nodes = top["footswitches"].value if "footswitches" in top and isinstance(
        top["footswitches"], yaml.SequenceNode) else []
    for i, fs in enumerate(footswitches):
        claim(fs.pin, f"footswitches[{i}].pin", fs_nodes[i] if i < len(fs_nodes) else None)
    if led:
        for j, pin in enumerate([led.pin] if led.pin is not None else list(led.rgb or ())):
            claim(pin, "led.pin" if led.pin is not None else f"led.rgb[{j}]", top.get("led"))
    if peer:
        claim(peer.heartbeat_out_pin, "peer.heartbeat.out_pin", top.get("peer"))
        claim(peer.heartbeat_in_pin, "peer.heartbeat.in_pin", top.get("peer"))
