"""`backtrack log --plot OUT.png`: a show's lock error, drift and faults on one picture.

Why a picture: a lock error that crept up for a minute before a takeover, or underruns that
cluster where the CPU got hot, are seen at a glance and missed in a list. Three panels share
the time axis (seconds, or minutes for a long show, since the show began): the lock error
(a follower's own, and its peak over each sample; on a leader its followers' as they report
it), the drift (a follower's correction and each unit's card against its nominal rate), and
the events: underruns, device loss and return, takeovers and step-downs, stems that failed;
each is also a vertical line through the panels above. Songs are shaded.

matplotlib is an optional extra (`pip install 'backtrack-appliance[plot]'`); without it
`--plot` says so in one line. What was drawn is also written into the PNG (text chunk
`backtrack-events`: each event's kind, time and pixel column), so a test or a script can
find every event in the image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError

EVENT_STYLE = {  # kind -> (colour, label)
    "underrun": ("#d62728", "underrun"),
    "device_lost": ("#000000", "device lost"),
    "device_back": ("#7f7f7f", "device back"),
    "takeover": ("#9467bd", "takeover"),
    "step_down": ("#ff7f0e", "stepped down"),
    "stem_failed": ("#8c564b", "stem failed"),
    "audio_stalled": ("#e377c2", "audio stalled"),
}
EVENT_ROW = {k: i for i, k in enumerate(EVENT_STYLE)}


def _load_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("--plot needs matplotlib, an optional extra: "
                        "pip install 'backtrack-appliance[plot]' (or apt install "
                        "python3-matplotlib)") from None
    return Figure, FigureCanvasAgg


def plot_show(recs: list[dict[str, Any]], out: Path, title: str = "show") -> dict[str, Any]:
    """Draw the show into `out` (PNG); returns what was drawn (as stored in the PNG)."""
    Figure, FigureCanvasAgg = _load_matplotlib()
    start = next((r for r in recs if r.get("kind") == "show_start"), recs[0] if recs else {})
    t0 = start.get("t_mono_ns", 0)
    end = max((r.get("t_mono_ns", t0) for r in recs), default=t0)
    minutes = (end - t0) / 1e9 > 600
    scale = 60e9 if minutes else 1e9

    def x(rec: dict[str, Any]) -> float:
        return (rec.get("t_mono_ns", t0) - t0) / scale

    samples = [r for r in recs if r.get("kind") == "sample"]
    fig = Figure(figsize=(12, 7), dpi=100)
    FigureCanvasAgg(fig)
    ax_err, ax_drift, ax_ev = fig.subplots(3, 1, sharex=True,
                                           gridspec_kw={"height_ratios": [3, 2, 2]})
    fig.suptitle(f"backtrack {title}")

    def line(ax, key: str, label: str, **kw) -> bool:
        pts = [(x(s), s[key]) for s in samples if isinstance(s.get(key), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **kw)
        return bool(pts)

    drew_err = line(ax_err, "lock_error_ms", "lock error (ms)", color="#1f77b4", lw=1.2)
    drew_err |= line(ax_err, "lock_error_peak_ms", "peak |error| per sample (ms)",
                     color="#aec7e8", lw=0.8)
    units = sorted({u for s in samples for u in (s.get("follower_error_ms") or {})})
    for u in units:
        pts = [(x(s), s["follower_error_ms"][u]) for s in samples
               if u in (s.get("follower_error_ms") or {})]
        ax_err.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.0,
                    label=f"unit {u}'s lock error (ms)")
        drew_err = True
    ax_err.set_ylabel("lock error, ms")
    if not drew_err:
        ax_err.text(0.5, 0.5, "no lock error samples (not a unit of a pair)",
                    transform=ax_err.transAxes, ha="center", va="center", color="#777777")
    line(ax_drift, "drift_ppm", "drift corrected (ppm)", color="#2ca02c", lw=1.2)
    line(ax_drift, "dac_ppm", "this card vs nominal (ppm)", color="#bcbd22", lw=1.0)
    ax_drift.set_ylabel("ppm")

    # songs, shaded on every panel
    open_song: tuple[float, str] | None = None
    spans = []
    for r in recs:
        if r.get("kind") == "song_start":
            if open_song is not None:
                spans.append((open_song[0], x(r), open_song[1]))
            open_song = (x(r), str(r.get("song")))
        elif r.get("kind") == "song_end" and open_song is not None:
            spans.append((open_song[0], x(r), open_song[1]))
            open_song = None
    if open_song is not None:
        spans.append((open_song[0], (end - t0) / scale, open_song[1]))
    for k, (a, b, song) in enumerate(spans):
        for ax in (ax_err, ax_drift, ax_ev):
            ax.axvspan(a, b, color="#f0f0f0" if k % 2 == 0 else "#e4e4e4", zorder=0, lw=0)
        ax_ev.text((a + b) / 2, len(EVENT_STYLE) - 0.3, f"song {song}", ha="center",
                   va="top", fontsize=7, color="#555555")

    events = []
    seen_labels = set()
    for r in recs:
        k = r.get("kind")
        if k not in EVENT_STYLE:
            continue
        colour, label = EVENT_STYLE[k]
        xv = x(r)
        for ax in (ax_err, ax_drift):
            ax.axvline(xv, color=colour, lw=1.0, alpha=0.6, zorder=1)
        ax_ev.vlines(xv, EVENT_ROW[k] - 0.4, EVENT_ROW[k] + 0.4, color=colour, lw=3,
                     label=label if label not in seen_labels else None, zorder=3,
                     antialiased=False)
        seen_labels.add(label)
        events.append({"kind": k, "t_s": round((r.get("t_mono_ns", t0) - t0) / 1e9, 3),
                       "x": xv})
    ax_ev.set_yticks(range(len(EVENT_STYLE)))
    ax_ev.set_yticklabels([v[1] for v in EVENT_STYLE.values()], fontsize=7)
    ax_ev.set_ylim(-0.6, len(EVENT_STYLE) - 0.1)
    ax_ev.set_xlabel("minutes since the show began" if minutes else
                     "seconds since the show began")
    begin = min(0.0, min((x(r) for r in recs), default=0.0))  # before the show: < 0
    ax_ev.set_xlim(begin, max((end - t0) / scale, begin + 1e-3))
    for ax in (ax_err, ax_drift, ax_ev):
        handles, _labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="upper right", fontsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    height = fig.bbox.height
    for ev in events:
        px, py = ax_ev.transData.transform((ev["x"], EVENT_ROW[ev["kind"]]))
        ev["x_px"] = int(round(px))
        ev["y_px"] = int(round(height - py))
        ev["colour"] = EVENT_STYLE[ev["kind"]][0]
        del ev["x"]
    drawn = {"events": events, "width": int(fig.bbox.width), "height": int(height),
             "samples": len(samples)}
    try:
        fig.savefig(str(out), format="png",
                    metadata={"Software": "backtrack log --plot",
                              "backtrack-events": json.dumps(drawn)})
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return drawn


__all__ = ["EVENT_STYLE", "plot_show"]
