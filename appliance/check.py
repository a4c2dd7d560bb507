"""`backtrack check`: is this show playable? Said before the show, not discovered on stage.

It loads the config (every config mistake at once, with file, line and key), opens every
stem, converts stems at another sample rate now (filling the resample cache, so the show's
start pays nothing), runs each song's real mix through the device-format converter (the
same code `run` and `render` use) to count clipped samples and to notice files that fail
or end early while being read, and opens the ALSA device with the configured parameters.

Three layers, so the logic is testable without audio or a sound card:
`inspect_song` / `probe_device` gather facts (I/O); `build_report` is a pure function from
those facts to the report (problems, warnings, playable); `format_report` renders it for a
person. `main` glues them to the CLI.

Severity: whatever stops a song from playing as written (a stem that cannot be read, is
truncated or cannot be routed; a click sample or a recorded voice cue that cannot be read;
a device that refuses the rate, format or channels) is an error; what plays but deserves a
look (duplicate titles, stems of different lengths, clipping, a count-in without a click,
a spoken cue espeak-ng could not make, a device that is not plugged in right now) is a
warning. Exit 0 = playable.

It also speaks the voice guide's section names into the cache (espeak-ng), as the cache
warmer does on the box: the decode thread only reads spoken cues from there.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio.click import read_sample
from .audio.formats import Converter
from .audio.overlays import cue_file, make_spoken_cues
from .audio.source import SongReader, cache_path, probe
from .audio.voiceguide import load_cue
from .config import Config, ConfigError, Device, Problem, Song, load
from .devices import quiet_stderr
from .errors import UserError
from .structure import Structure

BLOCK = 65536
LENGTH_TOLERANCE_S = 0.001  # stems within a millisecond of each other count as equal


# -- facts (I/O) ---------------------------------------------------------------------------

@dataclass
class StemFacts:
    """What opening and reading one stem found out."""

    index: int
    file: str
    to: list[str]
    channels: list[int]            # 0-based device channels, in route order
    gain_db: float
    line: int
    file_channels: int = 0
    file_rate: int = 0
    format: str = ""
    frames: int = 0                # playable frames at the device rate (after reading)
    problem: str | None = None
    route_mismatch: bool = False   # the problem is the channel count vs the route
    resampled_from: int | None = None
    decoder: str = "libsndfile"    # "pyav": libsndfile cannot read it, decoded into the cache
    cache_file: str | None = None
    cached_before: bool = False


@dataclass
class AssetFacts:
    """A file a song's click or voice guide plays besides its stems (a click sample, a
    recorded cue), as opening it found it: `problem` when it cannot play as written, `note`
    when it plays but deserves a look. `file`, `line`, `key` say where it is written (file
    None: the show file); `shared`: the show file writes it for every song, so it is
    reported once, not once per song."""

    what: str                 # "accent sound", "cue for 'chorus'"
    path: str
    file: str | None
    line: int
    key: str
    problem: str | None = None
    note: str | None = None
    shared: bool = False
    fallback: str = ""        # what plays instead when it cannot


@dataclass
class SongFacts:
    index: int
    title: str
    after: str
    line: int
    stems: list[StemFacts]
    frames: int = 0
    clipped: int = 0
    peaks: list[float] = field(default_factory=list)  # per device channel, linear
    file: str | None = None   # its song file; None: written in the show file
    key: str = ""             # key path of the song in that file (`songs[2]` inline)
    setlists: list[str] = field(default_factory=list)  # "friday #3", ...; none: unused
    structure: Structure | None = None  # sections and ramps, checked against `frames`
    assets: list[AssetFacts] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)      # sections spoken from the cache
    unspoken: list[tuple[str, str]] = field(default_factory=list)  # (section, why not)
    # where structure keys are written: key -> (file or None for the show file, line, key)
    where: dict[str, tuple[str | None, int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ToCheck:
    """A song as some setlist plays it (gains may differ from its song file's), where it
    is written, and which setlists play it at which number."""

    song: Song
    key: str
    setlists: tuple[str, ...]


def songs_to_check(cfg: Config, setlist: str | None = None) -> list[ToCheck]:
    """Every song of every setlist (each version once: a setlist that changes a song's gains
    plays another mix), then the library's songs no setlist plays; only one setlist's songs
    with `setlist`."""
    inline = [s for s in cfg.library if s.file is None]
    names = [setlist] if setlist is not None else list(cfg.setlists)
    where: dict[Song, list[str]] = {}
    for name in names:
        for n, song in enumerate(cfg.setlists[name], 1):
            where.setdefault(song, []).append(f"{name} #{n}")
    if setlist is None:
        for song in cfg.library:
            where.setdefault(song, [])

    def key(song: Song) -> str:
        for i, s in enumerate(inline):
            if s.line == song.line:
                return f"songs[{i}]"
        return ""
    return [ToCheck(song, key(song) if song.file is None else "", tuple(sl))
            for song, sl in where.items()]


@dataclass
class DeviceFacts:
    """status: ok | mismatch | missing | busy | refused | unavailable | skipped"""

    name: str
    status: str
    message: str = ""
    asked: dict[str, Any] = field(default_factory=dict)
    got: dict[str, Any] | None = None


def inspect_song(cfg: Config, index: int, block: int = BLOCK,
                 what: ToCheck | None = None) -> SongFacts:
    """Open every stem of a song (converting sample rates into the cache now), then run
    the song's whole mix through the device-format converter. The song is number `index`
    of the setlist in use, or `what`."""
    what = what or ToCheck(cfg.songs[index], f"songs[{index}]", (f"{cfg.setlist} #{index + 1}",))
    song = what.song
    dev = cfg.device
    stems: list[StemFacts] = []
    for j, st in enumerate(song.stems):
        facts = StemFacts(index=j, file=str(st.file), to=list(st.to), channels=list(st.channels),
                          gain_db=st.gain_db, line=st.line)
        info = probe(st)
        facts.file_channels, facts.file_rate, facts.format = info.channels, info.rate, info.format
        if info.problem is None and (info.rate != dev.rate or info.decoder == "pyav"):
            try:
                facts.cached_before = cache_path(cfg.cache_dir, st.file, dev.rate).exists()
            except OSError:
                pass
        stems.append(facts)
    reader = SongReader(song, dev, cfg.cache_dir, block)
    conv = Converter(dev.format, dev.channels, block)
    out = np.zeros((block, dev.channels), np.float32)
    mag = np.zeros((block, dev.channels), np.float32)
    peaks = np.zeros(dev.channels, np.float32)
    try:
        while True:
            n = reader.read_into(out)
            if n == 0:
                break
            conv.convert(out[:n])  # the bytes the sound card would get; counts clipping
            np.abs(out[:n], out=mag[:n])
            np.maximum(peaks, mag[:n].max(axis=0), out=peaks)
    finally:
        reader.close()
    for facts, sr in zip(stems, reader.stems, strict=True):
        info = sr.info
        facts.problem = info.problem
        facts.frames = sr.frames
        facts.route_mismatch = (info.problem is not None and info.frames > 0
                                and info.channels not in (1, len(facts.channels)))
        facts.resampled_from, facts.decoder = info.resampled_from, info.decoder
        if info.cache_file is not None:
            facts.cache_file = str(info.cache_file)
    facts = SongFacts(index=index, title=song.title, after=song.after, line=song.line,
                      stems=stems, frames=reader.frames, clipped=conv.clipped,
                      peaks=[float(p) for p in peaks],
                      file=str(song.file) if song.file else None, key=what.key,
                      setlists=list(what.setlists), structure=song.structure)
    inspect_structure(cfg, what, facts)
    return facts


def inspect_structure(cfg: Config, what: ToCheck, facts: SongFacts) -> None:
    """Open the click samples and recorded cues the song plays, speak its other cues into
    the cache, and note where its count-in is written (for the report's messages)."""
    st = what.song.structure
    if st is None:
        return
    rate = cfg.device.rate
    at = _Locator(cfg, what)
    if st.click is not None and st.click.mode != "off":
        for role, path in st.click.sounds.items():
            samples, why = read_sample(path, rate, f"{role} sound")
            file, line, key, shared = at.find(("click", "sounds", role))
            facts.assets.append(AssetFacts(
                f"{role} sound", str(path), file, line, key,
                problem=why if samples is None else None,
                note=why if samples is not None and why else None, shared=shared,
                fallback=f"the built-in {role} sound plays instead"))
    if st.guide is not None and st.guide.mode != "off":
        for sec in st.sections:
            path = cue_file(st.guide, sec.name)
            if path is None:
                continue
            samples, why = load_cue(path, rate)
            file, line, key, shared = at.find(("guide", "files", sec.name))
            facts.assets.append(AssetFacts(
                f"cue for '{sec.name}'", str(path), file, line, key,
                problem=why if samples is None else None,
                note=why if samples is not None and why else None, shared=shared,
                fallback=f"the voice guide does not announce '{sec.name}'"))
    made, failed = make_spoken_cues([what.song], rate, cfg.cache_dir)
    facts.spoken = [name for _song, name in made]
    facts.unspoken = [(name, why) for _song, name, why in failed]
    if st.count_in:
        file, line, key, _shared = at.find(("count_in",), setlists=True)
        facts.where["count_in"] = (file, line, key)


class _Locator:
    """Where a structure key of one song is written: a setlist entry's override, else the
    song's own (its song file, or its entry under `songs:`), else the show file's default.
    Config keeps values, not lines, and these messages must point at a line."""

    def __init__(self, cfg: Config, what: ToCheck):
        self.show = cfg.path
        song = what.song
        self.song_line = song.line
        m = re.fullmatch(r"songs\[(\d+)\]", what.key)
        if song.file is not None:
            self.song_file, self.song_path, self.prefix = song.file, (), ""
        elif m:
            self.song_file, self.song_path = cfg.path, ("songs", int(m.group(1)))
            self.prefix = f"{what.key}."
        else:
            self.song_file, self.song_path, self.prefix = None, (), ""
        self.entries = []
        for text in what.setlists:
            name, _sep, number = text.rpartition(" #")
            if number.isdigit():
                self.entries.append((name, int(number) - 1))

    def find(self, keys: tuple[str, ...], setlists: bool = False
             ) -> tuple[str | None, int, str, bool]:
        """(file or None for the show file, line, key path, written in the show file for
        every song)."""
        if setlists:
            for name, j in self.entries:
                hit = _yaml_path(self.show, ("setlists", name, j), keys)
                if hit is not None:
                    return None, hit[0], f"setlists.{name}[{j}].{hit[1]}", False
        song_file = None if self.song_file == self.show else \
            (str(self.song_file) if self.song_file else None)
        if self.song_file is not None:
            hit = _yaml_path(self.song_file, self.song_path, keys)
            if hit is not None:
                return song_file, hit[0], f"{self.prefix}{hit[1]}", False
        hit = _yaml_path(self.show, (), keys)
        if hit is not None:
            return None, hit[0], hit[1], True
        return song_file, self.song_line, self.prefix + ".".join(keys), False


def _yaml_path(path: Path, base: tuple[str | int, ...], keys: tuple[str, ...]
               ) -> tuple[int, str] | None:
    """(line, key path as written) of the deepest node along `keys` under `base` in a YAML
    file, when at least `keys[0]` is there; mapping keys match ignoring case when they do
    not match exactly (section names in `guide.files`)."""
    node = _yaml_root(path)
    for k in base:
        node = _yaml_child(node, k)
        if node is None:
            return None
    found: list[str] = []
    line = 0
    for k in keys:
        hit = _yaml_entry(node, k)
        if hit is None:
            break
        name, node, line = hit
        found.append(name)
    if not found:
        return None
    return line, ".".join(found)


_YAML_ROOTS: dict[tuple[str, int], Any] = {}


def _yaml_root(path: Path) -> Any:
    """The file's node tree (cached while the file is unchanged: every song asks the show
    file), or None when it cannot be read: only a nicety for the messages."""
    import yaml
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        return None
    key = (str(path), stamp)
    if key not in _YAML_ROOTS:
        try:
            _YAML_ROOTS[key] = yaml.compose(Path(path).read_text(encoding="utf-8"),
                                            Loader=yaml.SafeLoader)
        except Exception:  # noqa: BLE001 - config.load has read it; lines are a nicety
            _YAML_ROOTS[key] = None
    return _YAML_ROOTS[key]


def _yaml_entry(node: Any, key: str) -> tuple[str, Any, int] | None:
    """(key as written, value node, line of the key) of a mapping's entry."""
    import yaml
    if not isinstance(node, yaml.MappingNode):
        return None
    for exact in (True, False):
        for k, v in node.value:
            text = str(k.value)
            if text == key if exact else text.casefold() == key.casefold():
                return text, v, k.start_mark.line + 1
    return None


def _yaml_child(node: Any, key: str | int) -> Any:
    import yaml
    if isinstance(key, int):
        if isinstance(node, yaml.SequenceNode) and 0 <= key < len(node.value):
            return node.value[key]
        return None
    hit = _yaml_entry(node, key)
    return hit[1] if hit is not None else None


ALSA_ERRORS_MISSING = ("No such device", "No such file or directory", "Unknown PCM",
                       "No such card", "Cannot get card index")
ALSA_ERRORS_BUSY = ("Device or resource busy", "busy")


def probe_device(device: Device) -> DeviceFacts:
    """Open the PCM non-blocking with the configured parameters, read back what ALSA set,
    close it. Nothing is played."""
    asked = {"rate": device.rate, "channels": device.channels, "format": device.format,
             "period": device.period, "periods": device.periods}
    facts = DeviceFacts(device.name, "ok", asked=asked)
    try:
        import alsaaudio
    except ImportError as exc:
        facts.status, facts.message = "unavailable", f"pyalsaaudio is not available ({exc})"
        return facts
    fmt = getattr(alsaaudio, f"PCM_FORMAT_{device.format}")
    try:
        with quiet_stderr():
            pcm = alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK, mode=alsaaudio.PCM_NONBLOCK,
                                rate=device.rate, channels=device.channels, format=fmt,
                                periodsize=device.period, periods=device.periods,
                                device=device.name)
    except alsaaudio.ALSAAudioError as exc:
        text = str(exc)
        if any(s in text for s in ALSA_ERRORS_BUSY):
            facts.status = "busy"
        elif any(s in text for s in ALSA_ERRORS_MISSING):
            facts.status = "missing"
        else:
            facts.status = "refused"
        facts.message = text
        return facts
    try:
        info = pcm.info()
        facts.got = {"rate": info.get("rate"), "channels": info.get("channels"),
                     "format": info.get("format_name"), "period": info.get("period_size"),
                     "periods": info.get("periods")}
    finally:
        pcm.close()
    if any(facts.got[k] != asked[k] for k in asked):
        facts.status = "mismatch"
    return facts


# -- the report (pure) ---------------------------------------------------------------------

def fmt_duration(seconds: float) -> str:
    """m:ss.s, e.g. 3:05.2 (rounded to a tenth once, so 59.96 s is 1:00.0, not 0:60.0)."""
    tenths = int(round(max(0.0, seconds) * 10))
    m, t = divmod(tenths, 600)
    return f"{m}:{t // 10:02d}.{t % 10}"


def _dbfs(linear: float) -> float | None:
    return round(20 * math.log10(linear), 1) if linear > 0 else None


def _problem(cfg: Config, line: int, key: str, message: str, severity: str = "error",
             file: str | None = None) -> dict[str, Any]:
    return asdict(Problem(file or str(cfg.path), line, key, message, severity))


DEVICE_KEYS = ("name", "channels", "rate", "format", "period", "periods")


def device_lines(path: Path) -> dict[str, int]:
    """Line of each `device.<key>` in the config (or of `device:` for keys left at their
    default), so device problems point somewhere; Config itself keeps no device lines."""
    lines = dict.fromkeys(DEVICE_KEYS, 0)
    try:
        import yaml
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except Exception:  # noqa: BLE001 - only a nicety for the messages
        return lines
    if not isinstance(root, yaml.MappingNode):
        return lines
    for k, v in root.value:
        if k.value == "device":
            lines = dict.fromkeys(DEVICE_KEYS, k.start_mark.line + 1)
            if isinstance(v, yaml.MappingNode):
                for kk, vv in v.value:
                    if kk.value in lines:
                        lines[kk.value] = vv.start_mark.line + 1
    return lines


def build_report(cfg: Config, songs: list[SongFacts], device: DeviceFacts,
                 device_at: dict[str, int] | None = None,
                 peer_key: str | None = None, remote_pin: str | None = None) -> dict[str, Any]:
    """The check's verdict from the gathered facts: a pure function (no I/O). `device_at`
    maps device keys to config lines (from `device_lines`) for device problems; `peer_key`
    is what is wrong with the hot-standby key file (from `peer_key_problem`), `remote_pin`
    with the web remote's PIN file (from `remote_pin_problem`: a warning, since the page
    then runs read-only and the show is not at risk)."""
    rate = cfg.device.rate
    names: dict[int, list[str]] = {}
    for name, chans in cfg.outputs.items():
        for ch in chans:
            names.setdefault(ch, []).append(name)
    problems: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = [asdict(p) for p in cfg.warnings]
    out_songs = []
    shared: dict[tuple[int, str], tuple[AssetFacts, str]] = {}  # the show file's, once
    for s in songs:
        sp: list[dict[str, Any]] = []
        sw: list[dict[str, Any]] = []
        key = s.key
        at = f"{key}." if key else ""
        # a song no setlist plays cannot spoil tonight's show: its problems are warnings
        grave = "error" if s.setlists else "warning"
        stems_out = []
        for st in s.stems:
            skey = f"{at}stems[{st.index}]"
            if st.problem:
                sp.append(_problem(cfg, st.line, f"{skey}.to" if st.route_mismatch
                                   else f"{skey}.file", f"{st.file}: {st.problem}", grave,
                                   s.file))
            beyond = [ch + 1 for ch in st.channels if ch >= cfg.device.channels]
            if beyond:
                sp.append(_problem(cfg, st.line, f"{skey}.to",
                                   f"routed to channel(s) {beyond}, beyond the device's "
                                   f"{cfg.device.channels} channels (device.channels)", grave,
                                   s.file))
            stems_out.append({
                "file": st.file, "to": st.to, "channels": [c + 1 for c in st.channels],
                "gain_db": st.gain_db, "line": st.line, "file_channels": st.file_channels,
                "file_rate": st.file_rate, "format": st.format, "frames": st.frames,
                "duration_s": round(st.frames / rate, 3), "duration": fmt_duration(st.frames / rate),
                "resampled_from": st.resampled_from, "decoder": st.decoder,
                "cache_file": st.cache_file,
                "cached_before": st.cached_before, "problem": st.problem,
            })
        sp.extend(structure_problems(cfg, s, grave))
        for a in s.assets:
            if a.shared:
                if a.problem or a.note:
                    seen = shared.get((a.line, a.key))
                    if seen is None or (seen[1] == "warning" and grave == "error"):
                        shared[(a.line, a.key)] = (a, grave)
            elif a.problem:
                sp.append(_problem(cfg, a.line, a.key, f"{a.problem}; {a.fallback}", grave,
                                   a.file))
            elif a.note:
                sw.append(_problem(cfg, a.line, a.key, a.note, "warning", a.file))
        sw.extend(structure_warnings(cfg, s))
        good = [st for st in s.stems if st.frames > 0 and not st.problem]
        if len(good) > 1:
            longest = max(st.frames for st in good)
            short = [st for st in good if (longest - st.frames) / rate > LENGTH_TOLERANCE_S]
            if short:
                listing = ", ".join(f"{Path(st.file).name} {fmt_duration(st.frames / rate)}"
                                    for st in short)
                sw.append(_problem(cfg, s.line, f"{at}stems",
                                   f"stems differ in length: the song lasts "
                                   f"{fmt_duration(longest / rate)} (its longest stem), "
                                   f"shorter: {listing}; shorter stems end in silence",
                                   "warning", s.file))
        if s.clipped:
            by_output: dict[str, list[int]] = {}
            for c, p in enumerate(s.peaks):
                if p > 1.0:
                    for n in names.get(c, [f"channel {c + 1}"]):
                        by_output.setdefault(n, []).append(c + 1)
            where = ", ".join(f"{n} (ch {', '.join(map(str, cs))})"
                              for n, cs in by_output.items())
            peak = _dbfs(max(s.peaks)) if s.peaks else None
            sw.append(_problem(cfg, s.line, key or "stems",
                               f"the mix clips: {s.clipped} samples beyond full scale on "
                               f"{where or 'some outputs'}, peak {peak:+.1f} dBFS; lower "
                               "gain_db of the stems routed there"
                               + (f" (as {', '.join(s.setlists)} plays it)" if s.file and
                                  s.setlists else ""), "warning", s.file))
        if grave == "warning":
            for p in sp:
                p["message"] += " (no setlist plays this song)"
            sw, sp = sp + sw, []
        problems.extend(sp)
        warnings.extend(sw)
        out_songs.append({
            "number": s.index + 1, "title": s.title, "after": s.after, "line": s.line,
            "file": s.file, "setlists": s.setlists,
            "frames": s.frames, "duration_s": round(s.frames / rate, 3),
            "duration": fmt_duration(s.frames / rate), "clipped": s.clipped,
            "peak_dbfs": _dbfs(max(s.peaks)) if s.peaks else None,
            "stems": stems_out, "problems": sp, "warnings": sw, "spoken_cues": s.spoken,
        })
    for a, grave in shared.values():
        if a.problem:
            p = _problem(cfg, a.line, a.key, f"{a.problem}; {a.fallback}", grave, a.file)
            (problems if grave == "error" else warnings).append(p)
        else:
            warnings.append(_problem(cfg, a.line, a.key, a.note or "", "warning", a.file))
    dev_out = _device_verdict(cfg, device, device_at or {}, problems, warnings)
    if peer_key:
        # `run` refuses to start the pair without it: an error, not a warning
        problems.append(_problem(cfg, _line_of(cfg.path, "key_file"), "peer.key_file", peer_key))
    if remote_pin:
        warnings.append(_problem(cfg, _line_of(cfg.path, "pin_file"), "remote.pin_file",
                                 f"{remote_pin}; the page will be read-only", "warning"))
    total = sum(s.frames for s in songs)
    return {
        "config": str(cfg.path),
        "playable": not problems,
        "device": dev_out,
        "songs": out_songs,
        "setlists": _setlist_summary(cfg, out_songs),
        "total_duration_s": round(total / rate, 3),
        "total_duration": fmt_duration(total / rate),
        "cache_dir": str(cfg.cache_dir),
        "problems": problems,
        "warnings": warnings,
    }


def structure_problems(cfg: Config, s: SongFacts, severity: str = "error"
                       ) -> list[dict[str, Any]]:
    """Sections and tempo ramps past the song's end: only the stems say where it ends, so
    the song file's reader cannot see these (a marker typed a bar too late, a ramp for an
    outro that was cut)."""
    st = s.structure
    if st is None or s.frames <= 0:
        return []
    rate = cfg.device.rate
    at = f"{s.key}." if s.key else ""
    length = f"the song lasts {fmt_duration(s.frames / rate)} (its longest stem)"
    out = []
    for i, sec in enumerate(st.sections):
        if sec.frame >= s.frames:
            where = f"{sec.written}, " if sec.written else ""
            out.append(_problem(cfg, sec.line, f"{at}sections[{i}].at",
                                f"section '{sec.name}' starts at {where}"
                                f"{fmt_duration(sec.frame / rate)}, past the song's end: "
                                f"{length}", severity, s.file))
    if st.tempo is not None:
        for j, ch in enumerate(st.tempo.changes):
            if not ch.is_ramp:
                continue
            end = st.tempo.frame_at(ch.bar + ch.bars)
            if end > s.frames:
                out.append(_problem(cfg, ch.line, f"{at}tempo_map[{j}].bars",
                                    f"the ramp from bar {ch.bar} to {ch.ramp_to:g} BPM ends at "
                                    f"bar {ch.bar + ch.bars} "
                                    f"({fmt_duration(end / rate)}), past the song's end: "
                                    f"{length}", severity, s.file))
    return out


def structure_warnings(cfg: Config, s: SongFacts) -> list[dict[str, Any]]:
    """What plays, but not as the band expects: a count-in with no click to count it (it
    would be bars of silence before bar 1), sections the voice guide cannot announce (no
    spoken cue could be made: the decoder only reads them from the cache)."""
    st = s.structure
    if st is None:
        return []
    out = []
    at = f"{s.key}." if s.key else ""
    if st.count_in and st.tempo is not None and (st.click is None or st.click.mode == "off"):
        file, line, key = s.where.get("count_in", (s.file, s.line, f"{at}count_in"))
        out.append(_problem(cfg, line, key, f"count_in: {st.count_in} counts in silently: "
                            f"'{s.title}' has no click (click: off, or no click: in the song "
                            "or the show file), so play starts with "
                            f"{st.count_in} bar{'s' if st.count_in != 1 else ''} of silence; "
                            "give it a click (click: {to: OUTPUT}) or set count_in: 0",
                            "warning", file))
    by_reason: dict[str, list[str]] = {}
    for name, why in s.unspoken:
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        j = next((i for i, sec in enumerate(st.sections) if sec.name == names[0]), 0)
        line = st.sections[j].line if st.sections else s.line
        listed = ", ".join(f"'{n}'" for n in names)
        many = len(names) > 1
        out.append(_problem(cfg, line, f"{at}sections[{j}]",
                            f"no spoken cue for section{'s' if many else ''} {listed} of "
                            f"'{s.title}': {why}; the voice guide does not announce "
                            f"{'them' if many else 'it'} (or record one: guide.files)",
                            "warning", s.file))
    return out


def _setlist_summary(cfg: Config, songs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line's worth per setlist checked: songs, total length, problems."""
    out = []
    rate = cfg.device.rate
    for name in cfg.setlists:
        # (song, how many times this setlist plays it)
        mine = [(s, k) for s in songs
                if (k := sum(w.startswith(f"{name} #") for w in s["setlists"]))]
        if not mine:
            continue
        count = sum(k for _s, k in mine)
        frames = sum(s["frames"] * k for s, k in mine)
        out.append({"name": name, "songs": count, "duration_s": round(frames / rate, 3),
                    "duration": fmt_duration(frames / rate),
                    "problems": sum(len(s["problems"]) for s, _k in mine),
                    "in_use": name == cfg.setlist})
    return out


def _device_verdict(cfg: Config, d: DeviceFacts, at: dict[str, int], problems: list,
                    warnings: list) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name, "status": d.status, "asked": d.asked, "got": d.got,
                           "checked": d.status not in ("skipped", "unavailable")}
    name = d.name
    if d.status == "ok":
        out["message"] = "accepts the configured rate, format, channels and period"
    elif d.status == "skipped":
        out["message"] = "not checked (--no-device)"
    elif d.status == "unavailable":
        out["message"] = f"not checked: {d.message}"
        warnings.append(_problem(cfg, at.get("name", 0), "device.name",
                                 out["message"], "warning"))
    elif d.status == "missing":
        out["message"] = (f"not found ({d.message}); if it is a USB interface that is unplugged "
                          "right now (at home) this is fine, but the show needs it plugged in")
        warnings.append(_problem(cfg, at.get("name", 0), "device.name",
                                 f"ALSA device '{name}' {out['message']}", "warning"))
    elif d.status == "busy":
        out["message"] = (f"busy ({d.message}): another program (perhaps the backtrack "
                          "daemon) has it open, so its parameters could not be checked")
        warnings.append(_problem(cfg, at.get("name", 0), "device.name",
                                 f"ALSA device '{name}' is {out['message']}", "warning"))
    elif d.status == "refused":
        out["message"] = f"refused the configuration ({d.message})"
        problems.append(_problem(cfg, at.get("name", 0), "device",
                                 f"ALSA device '{name}' {out['message']}; check device.rate, "
                                 "format, channels and period"))
    elif d.status == "mismatch":
        got = d.got or {}
        bad = []
        for k in ("rate", "format", "channels"):
            if got.get(k) != d.asked[k]:
                bad.append(k)
                problems.append(_problem(
                    cfg, at.get(k, 0), f"device.{k}",
                    f"ALSA device '{name}' does not accept {k} {d.asked[k]} (it offered "
                    f"{got.get(k)})"))
        for k in ("period", "periods"):
            if got.get(k) != d.asked[k]:
                bad.append(k)
                warnings.append(_problem(
                    cfg, at.get(k, 0), f"device.{k}",
                    f"ALSA device '{name}' uses {k} {got.get(k)} instead of {d.asked[k]} "
                    "(latency differs from what is configured)", "warning"))
        out["message"] = "differs from the configuration: " + ", ".join(
            f"{k} {got.get(k)} instead of {d.asked[k]}" for k in bad)
        if not any(k in bad for k in ("rate", "format", "channels")):
            out["status"] = "ok"
    return out


def format_report(report: dict[str, Any]) -> tuple[str, str]:
    """(stdout text, stderr text) for a person: the show on stdout, one block per song;
    the problems and warnings on stderr as `file:line: key: message`, like config errors."""
    base = Path(report["config"]).parent
    lines = [f"backtrack check: {report['config']}"]
    dev = report["device"]
    a = dev["asked"]
    if a:
        lines.append(f"device {dev['name']}: {a['channels']} channels, {a['rate']} Hz, "
                     f"{a['format']}, period {a['period']} x {a['periods']}")
    else:
        lines.append(f"device {dev['name']}")
    lines.append(f"  {dev['message']}")
    for s in report["songs"]:
        lines.append("")
        plays = f"  [{', '.join(s['setlists'])}]" if s.get("setlists") else \
            ("  [in no setlist]" if s.get("setlists") is not None else "")
        lines.append(f"song {s['number']}: {s['title']}  {s['duration']}  (after: {s['after']})"
                     f"{plays}")
        if s.get("file"):
            lines.append(f"  {s['file']}")
        for st in s["stems"]:
            f = Path(st["file"])
            try:
                shown = str(f.relative_to(base))
            except ValueError:
                shown = str(f)
            gain = f" {st['gain_db']:+.1f} dB" if st["gain_db"] else ""
            dur = st["duration"] if st["frames"] else "  -   "
            desc = (f"  ({st['file_channels']} ch, {st['file_rate']} Hz)"
                    if st["file_channels"] else "")
            line = f"  {dur:>7}  {shown}{desc} -> {', '.join(st['to'])}{gain}"
            cached = " (was cached)" if st["cached_before"] else " (now cached)"
            if st.get("decoder") == "pyav" and st["cache_file"]:
                line += (f"; decoded with PyAV ({st['format']})"
                         + (f" and converted from {st['resampled_from']} Hz"
                            if st["resampled_from"] else "") + " into the cache" + cached)
            elif st["resampled_from"]:
                line += f"; converted from {st['resampled_from']} Hz" + cached
            if st["problem"]:
                line += f"\n           !! {st['problem']}"
            lines.append(line)
        if s.get("spoken_cues"):
            lines.append(f"  voice guide: spoken cues in the cache for "
                         f"{', '.join(s['spoken_cues'])}")
        peak = s["peak_dbfs"]
        level = f"peak {peak:+.1f} dBFS" if peak is not None else "silent"
        clip = f", {s['clipped']} samples clipped" if s["clipped"] else ", no clipping"
        lines.append(f"  {level}{clip}")
    lines.append("")
    lines.append(f"{len(report['songs'])} song(s), {report['total_duration']} in all")
    for sl in report.get("setlists", ()):
        mark = " (in use)" if sl["in_use"] else ""
        lines.append(f"setlist {sl['name']}{mark}: {sl['songs']} songs, {sl['duration']}, "
                     f"{sl['problems'] or 'no'} problem{'s' if sl['problems'] != 1 else ''}")
    err = []
    if report["warnings"]:
        err.append(f"{len(report['warnings'])} warning(s):")
        err += [f"  {_line(p)}" for p in report["warnings"]]
    if report["problems"]:
        err.append(f"{len(report['problems'])} problem(s):")
        err += [f"  {_line(p)}" for p in report["problems"]]
    return "\n".join(lines) + "\n", ("\n".join(err) + "\n") if err else ""


def verdict(report: dict[str, Any]) -> str:
    n = len(report["problems"])
    if not n:
        return "OK: show is playable"
    return f"NOT PLAYABLE: {n} problem{'s' if n != 1 else ''}"


def _line(p: dict[str, Any]) -> str:
    return str(Problem(p["file"], p["line"], p["key"], p["message"], p["severity"]))


def config_error_report(path: str, exc: ConfigError) -> dict[str, Any]:
    errors = [asdict(p) for p in exc.problems if p.severity == "error"]
    return {"config": str(Path(path).expanduser().absolute()), "playable": False,
            "device": None, "songs": [], "total_duration_s": 0.0, "total_duration": "0:00.0",
            "problems": errors,
            "warnings": [asdict(p) for p in exc.problems if p.severity != "error"]}


# -- CLI -----------------------------------------------------------------------------------

def _line_of(path: Path, key: str) -> int:
    """The first line of the config that sets `key` (0: not found), for a problem found
    after loading."""
    try:
        for n, text in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
            if re.search(rf"\b{re.escape(key)}\s*:", text):
                return n
    except OSError:
        pass
    return 0


def peer_key_problem(cfg: Config) -> str | None:
    """A missing, unreadable or too short peer key, as `run` would find it at start."""
    if cfg.peer is None or cfg.peer.key_file is None:
        return None
    from .peer.wire import KeyFileError, load_key
    try:
        load_key(cfg.peer.key_file, warn=lambda _msg: None)
    except KeyFileError as exc:
        return str(exc)
    return None


def remote_pin_problem(cfg: Config) -> str | None:
    """A missing, unreadable or too short PIN file, as `run` would find it at start."""
    if cfg.remote is None or cfg.remote.pin_file is None:
        return None
    from .controls.remote import PinError, read_pin
    try:
        read_pin(cfg.remote.pin_file)
    except PinError as exc:
        return str(exc)
    return None


def run_check(cfg: Config, probe_device_too: bool = True, progress=None,
              setlist: str | None = None) -> dict[str, Any]:
    """The whole library and every setlist, or one setlist's songs (`setlist`)."""
    songs = []
    todo = songs_to_check(cfg, setlist)
    for i, what in enumerate(todo):
        if progress:
            progress(i, len(todo), what.song.title)
        songs.append(inspect_song(cfg, i, what=what))
    if probe_device_too:
        device = probe_device(cfg.device)
    else:
        device = DeviceFacts(cfg.device.name, "skipped", asked={
            "rate": cfg.device.rate, "channels": cfg.device.channels,
            "format": cfg.device.format, "period": cfg.device.period,
            "periods": cfg.device.periods})
    return build_report(cfg, songs, device, device_lines(cfg.path), peer_key_problem(cfg),
                        remote_pin_problem(cfg))


def main(config: str, as_json: bool = False, probe_device: bool = True,
         setlist: str | None = None, write_checksums: bool = False) -> int:
    try:
        cfg = load(config)
    except ConfigError as exc:
        if not as_json:
            raise  # the CLI prints config problems the same way for every command
        _emit(json.dumps(config_error_report(config, exc), indent=2) + "\n")
        return 1
    if setlist is not None and setlist not in cfg.setlists:
        raise UserError(f"there is no setlist '{setlist}' in {cfg.path}; setlists: "
                        f"{', '.join(cfg.setlists)}")
    tty = not as_json and sys.stderr.isatty()

    def progress(i: int, n: int, title: str) -> None:
        print(f"\rchecking song {i + 1}/{n}: {title[:40]:<40}", end="",
              file=sys.stderr, flush=True)

    report = run_check(cfg, probe_device, progress if tty else None, setlist)
    if tty:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)
    if as_json:
        _emit(json.dumps(report, indent=2) + "\n")
    else:
        out, err = format_report(report)
        _emit(out)
        if err:
            sys.stderr.write(err)
            sys.stderr.flush()
        if report["warnings"] and report["playable"]:
            out = f"{len(report['warnings'])} warning(s), see above\n"
        else:
            out = ""
        _emit(out + verdict(report) + "\n")
    if write_checksums:
        store_checksums(cfg, tty)
    return 0 if report["playable"] else 1


def all_stem_files(cfg: Config) -> list[Path]:
    """Every stem file of the show: the library's songs and every setlist's."""
    files = {st.file for song in cfg.library for st in song.stems}
    files |= {st.file for songs in cfg.setlists.values() for song in songs for st in song.stems}
    return sorted(files)


def store_checksums(cfg: Config, tty: bool = False) -> None:
    """`--write-checksums`: the manifest the self-test compares the stems with
    (appliance.stemsums); files that cannot be read are left out and named."""
    from .stemsums import write_manifest

    def progress(i: int, n: int, name: str) -> None:
        print(f"\rchecksum {i + 1}/{n}: {name[:40]:<40}", end="", file=sys.stderr, flush=True)

    files = [f for f in all_stem_files(cfg) if f.is_file()]
    missing = [f for f in all_stem_files(cfg) if not f.is_file()]
    done, problems = write_manifest(cfg.checksums_file, files, progress if tty else None)
    if tty:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)
    for f in missing:
        problems.append(f"{f}: not written: file not found")
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    _emit(f"checksums of {done} stem file(s) written to {cfg.checksums_file}\n")


def live_main(sock: str, as_json: bool = False, timeout_s: float = 3600.0) -> int:
    """`check --live`: ask the running daemon for its self-test (appliance.selftest) and
    wait for the result, which its status carries; exit 0 when it passed."""
    import time

    from .ctl import Client
    from .livemix import describe
    from .selftest import format_result

    t0 = time.monotonic()
    client = Client(sock)
    try:
        reply = client.request({"cmd": "selftest", "why": "live"})
        if not reply.get("ok"):
            raise UserError(f"the daemon refused the self-test: {reply.get('error')}")
        want = reply.get("id")
        tty = not as_json and sys.stderr.isatty()
        while True:
            st = client.request({"cmd": "status"}).get("state", {})
            res = st.get("selftest") or {}
            if res.get("id") == want and res.get("result") not in (None, "running"):
                break
            if time.monotonic() - t0 > timeout_s:
                raise UserError(f"no self-test result after {timeout_s:.0f} s")
            if tty:
                print(f"\rself-test #{want} running, {time.monotonic() - t0:.0f} s", end="",
                      file=sys.stderr, flush=True)
            time.sleep(0.05)
        if tty:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    finally:
        client.close()
    res = dict(res)
    res["client_s"] = round(time.monotonic() - t0, 3)
    mix = st.get("mix") or {}
    res["mix"] = mix
    if as_json:
        _emit(json.dumps(res, indent=2) + "\n")
    else:
        _emit(format_result(res))
        if mix.get("muted") or mix.get("solo") or mix.get("trim_db"):
            # not a fault, but nobody should be surprised by it (issue 13)
            _emit(f"note: a live mix is in effect: {describe(mix)} "
                  "(`backtrack ctl mix reset` clears it)\n")
    return 0 if res.get("result") == "pass" else 1


def _emit(text: str) -> None:
    """Write to stdout; a reader that went away (`check --json | head`) is not an error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        os.close(devnull)
