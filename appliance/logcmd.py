"""`backtrack log`: a show's black box (appliance.showlog) for a person or a program.

    backtrack log --config FILE [--show N] [--json] [--plot OUT.png] [--list] [--dir DIR]

Without `--show` the newest show. The timeline gives each event its time since the show
began (monotonic, so a wall clock set by chrony mid-show does not bend it) and its wall
clock time; the once-a-second samples (lock error, drift, temperature) are summed up at the
end instead of listed. `--json` prints every record as stored, one object per line.
`--plot` draws lock error, drift, underruns and takeovers over the show (appliance.logplot,
needs matplotlib: the `plot` extra).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError
from .showlog import ReadStats, read_show, shows


def _when(rec: dict[str, Any], t0: int) -> str:
    dt = (rec.get("t_mono_ns", t0) - t0) / 1e9
    sign = "-" if dt < 0 else "+"
    m, s = divmod(abs(dt), 60)
    wall = rec.get("t_wall")
    clock = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}" \
        if isinstance(wall, (int, float)) else "?"
    return f"{sign}{int(m)}:{s:06.3f}  {clock}"


def _song(rec: dict[str, Any]) -> str:
    t = rec.get("title")
    return f"song {rec.get('song')}" + (f" '{t}'" if t else "")


def describe(rec: dict[str, Any]) -> str:
    """One event in words (the timeline's last column)."""
    k = rec.get("kind")
    g = rec.get
    if k == "show_start":
        songs = g("songs") or []
        unit = f", unit {g('unit')}" if g("unit") is not None else ""
        return (f"show {g('show')} begins: setlist '{g('setlist')}' ({len(songs)} songs), "
                f"device {g('device')}, {g('role')}{unit}, backtrack {g('version')}")
    if k == "daemon_start":
        return f"daemon started (backtrack {g('version')}, pid {g('pid')})"
    if k == "daemon_stop":
        return f"daemon stopping ({g('state')}, song {g('song')}, {g('xruns')} underruns in all)"
    if k == "command":
        ok = "" if g("ok") else "REFUSED "
        res = f": {g('result')}" if g("result") else ""
        return f"{ok}{g('action')} from {g('source')}{res}"
    if k == "song_start":
        how = f" ({g('how')}, from frame {g('at_frame')})" if g("how") else ""
        return f"{_song(rec)} starts{how}"
    if k == "song_end":
        at = f" at {g('at_s'):.3f} s" if isinstance(g("at_s"), (int, float)) else ""
        why = "played to its end" if g("reason") == "end" else f"ended by {g('reason')}"
        return f"{_song(rec)} {why}{at}"
    if k == "underrun":
        return f"UNDERRUN #{g('count')} (song {g('song')}, {g('state')})"
    if k == "device_lost":
        return f"DEVICE LOST: {g('error')}"
    if k == "device_back":
        return f"device {g('device')} is back"
    if k == "stem_failed":
        return f"STEM FAILED: {_song(rec)}: {g('problem')} (plays as silence)"
    if k == "role":
        return f"role: {g('was')} -> {g('role')} (term {g('term')})"
    if k == "lead":
        return f"this unit leads (term {g('term')}): {g('why')}"
    if k == "takeover":
        at = f"; at song {g('song')} frame {g('frame')}" if g("song") else ""
        return f"TAKEOVER: this unit leads now (term {g('term')}): {g('why')}{at}"
    if k == "step_down":
        return f"stepped down: following unit {g('leader')} (term {g('term')})"
    if k == "failing_announced":
        return f"told the followers to take over: {g('reason')}"
    if k == "protection":
        if g("protected"):
            return "show protected"
        return "NOT PROTECTED: " + "; ".join(g("why_not") or ())
    if k == "lock":
        err = f" (error {g('error_ms')} ms)" if g("error_ms") is not None else ""
        return (f"locked to the leader{err}" if g("locked") else f"lock LOST{err}") + \
            f", song {g('song')}"
    if k == "seek":
        return f"seek to song {g('song')} frame {g('frame')} (follower joining or re-locking)"
    if k == "selftest":
        faults = "; ".join(g("faults") or ())
        return (f"self-test #{g('id')} ({g('why')}): {str(g('result')).upper()} in "
                f"{g('took_s')} s" + (f": {faults}" if faults else ""))
    if k == "throttling":
        now = ", ".join(g("now") or ()) or "none now"
        return f"throttling: {now} (since boot: {', '.join(g('since_boot') or ()) or 'none'})"
    if k == "setlist":
        return f"setlist '{g('name')}' chosen ({g('songs')} songs)" + \
            (f", {g('source')}" if g("source") else "")
    if k == "setlist_mismatch":
        return f"unit {g('unit')} plays another setlist: not following it"
    if k == "stall":
        return (f"this unit stalled {g('ms')} ms (did not run): the leader's silence in it "
                "not held against it")
    if k == "reload":
        return f"config reloaded ({g('songs')} songs)"
    if k == "audio_stalled":
        return "AUDIO PATH STALLED: the watchdog restarts the service"
    if k == "log_dropped":
        return f"{g('count')} events not logged (the log's inbox was full)"
    if k == "show_part":
        return f"continued in part {g('part')}"
    if k == "show_end":
        return f"show ends: {g('why')}"
    rest = {a: b for a, b in rec.items() if a not in ("t_wall", "t_mono_ns", "kind", "seq")}
    return json.dumps(rest)


def summary(recs: list[dict[str, Any]]) -> list[str]:
    """The show in a few lines: songs, faults, and what the samples say."""
    count: dict[str, int] = {}
    for r in recs:
        count[r.get("kind", "?")] = count.get(r.get("kind", "?"), 0) + 1
    samples = [r for r in recs if r.get("kind") == "sample"]
    out = [f"songs started {count.get('song_start', 0)}, underruns {count.get('underrun', 0)}, "
           f"device lost {count.get('device_lost', 0)}, takeovers {count.get('takeover', 0)}, "
           f"stems failed {count.get('stem_failed', 0)}, commands {count.get('command', 0)}"]

    def series(key: str) -> list[float]:
        return [float(s[key]) for s in samples if isinstance(s.get(key), (int, float))]

    locked = [s for s in samples if s.get("locked") is not False]  # joining is not locked
    peaks = [abs(float(s[k])) for s in locked for k in ("lock_error_peak_ms",)
             if isinstance(s.get(k), (int, float))] or \
        [abs(float(s["lock_error_ms"])) for s in locked
         if isinstance(s.get("lock_error_ms"), (int, float))]
    if peaks:
        peaks.sort()
        p99 = peaks[min(len(peaks) - 1, int(0.99 * len(peaks)))]
        out.append(f"lock error while locked: max {peaks[-1]:.3f} ms, p99 {p99:.3f} ms "
                   f"({len(peaks)} samples)")
    drift = series("drift_ppm")
    if drift:
        out.append(f"drift: {min(drift):+.1f} .. {max(drift):+.1f} ppm")
    temps = series("temp_c")
    if temps:
        out.append(f"CPU temperature: {min(temps):.1f} .. {max(temps):.1f} C")
    throttled = {s.get("throttled") for s in samples if s.get("throttled") not in (None, "0x0")}
    if throttled:
        out.append(f"throttling seen: {', '.join(sorted(throttled))}")
    if samples and not (peaks or drift or temps):
        out.append(f"{len(samples)} samples (no pair, no temperature shown by this box)")
    return out


def timeline(number: int, recs: list[dict[str, Any]], stats: ReadStats) -> str:
    events = [r for r in recs if r.get("kind") != "sample"]
    start = next((r for r in recs if r.get("kind") == "show_start"), recs[0] if recs else None)
    t0 = start.get("t_mono_ns", 0) if start else 0
    wall = start.get("t_wall") if start else None
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall)) if wall else "?"
    last = recs[-1].get("t_mono_ns", t0) if recs else t0
    dur = (last - t0) / 1e9
    lines = [f"show {number}, {day}, {int(dur // 60)}:{dur % 60:04.1f} long, "
             f"{len(recs)} records"
             + (f" ({stats.bad} damaged skipped)" if stats.bad else "")
             + (f" (a torn tail of {stats.torn_tail_bytes} bytes ignored)"
                if stats.torn_tail_bytes else "")]
    for r in events:
        lines.append(f"  {_when(r, t0)}  {r.get('kind', '?'):<17} {describe(r)}")
    lines += ["", *summary(recs)]
    return "\n".join(lines) + "\n"


def list_shows(folder: Path) -> str:
    found = shows(folder)
    if not found:
        return f"no shows in {folder}\n"
    lines = [f"shows in {folder}:"]
    for n, parts in sorted(found.items()):
        size = sum(p.size for p in parts)
        _n, recs, _st = read_show(folder, n)
        first = next((r for r in recs if r.get("kind") == "show_start"), None)
        wall = first.get("t_wall") if first else None
        day = time.strftime("%Y-%m-%d %H:%M", time.localtime(wall)) if wall else "?"
        songs = sum(1 for r in recs if r.get("kind") == "song_start")
        unders = sum(1 for r in recs if r.get("kind") == "underrun")
        lines.append(f"  show {n:>4}  {day}  {songs:>3} songs  {unders:>3} underruns  "
                     f"{size / 1024:.0f} KB in {len(parts)} file(s)")
    return "\n".join(lines) + "\n"


def log_dir_of(config: str | None, folder: str | None) -> Path:
    """The show log folder: --dir, else the config's `log_dir`."""
    if folder:
        return Path(folder)
    from .config import load
    return load(config).log_dir


def main(config: str | None, show: int | None = None, as_json: bool = False,
         plot: str | None = None, listing: bool = False, folder: str | None = None) -> int:
    where = log_dir_of(config, folder)
    if listing:
        _emit(list_shows(where))
        return 0
    try:
        number, recs, stats = read_show(where, show)
        # in the order things happened: the file has the show's first record first, then
        # what happened before the first play, and threads' records may cross by a hair
        recs.sort(key=lambda r: r.get("t_mono_ns", 0))
    except KeyError:
        have = sorted(shows(where))
        if not have:
            raise UserError(f"no show logged in {where} yet (a show begins at the first play)"
                            ) from None
        raise UserError(f"there is no show {show} in {where}; shows: "
                        f"{', '.join(map(str, have[-20:]))}") from None
    if plot:
        from .logplot import plot_show
        drawn = plot_show(recs, Path(plot), f"show {number}")
        print(f"plotted show {number}: {len(drawn['events'])} events -> {plot}",
              file=sys.stderr)
    if as_json:
        _emit("".join(json.dumps(r) + "\n" for r in recs))
    elif not plot:
        _emit(timeline(number, recs, stats))
    return 0


def _emit(text: str) -> None:
    from .check import _emit as emit
    emit(text)


__all__ = ["describe", "list_shows", "main", "summary", "timeline"]
