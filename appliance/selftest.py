"""The pre-show self-test: is everything the show needs good, right now, on this box?

Why: `backtrack check` says whether a show file is playable on paper; before a show the
band needs to know that the files on this card are the ones that were checked, that the
interface is there as configured and plays without underruns, that the disk will hold the
night's log, and that the backup unit is there, locked, with its clock in step. It runs at
the daemon's start (`selftest.at_start`), on a footswitch hold or MIDI mapping
(`hold: selftest`) and from `backtrack check --live` (the socket's `{"cmd": "selftest"}`).
The result goes to `status.selftest`, the show log and the LED (`selftest_pass`,
`selftest_fail`).

Checks, each with status pass | fail | warn | skip and a detail; every fault is named
("stem missing: ...", "stem changed: ...", "device absent: ...", "peer absent: ..."):

- **stems**: every stem of the setlist in use opens as audio and matches its stored
  checksum (appliance.stemsums, in an idle-priority child process; while a song plays only
  the headers are read, and a song that starts stops the child: the show comes first);
- **device**: open with the configured channels, rate and format (the sink refuses any
  other);
- **silent_write**: only while no song plays: for `SILENT_S` the writer's own idle silence
  is watched: periods written at the card's pace and not one underrun;
- **disk**: free space where the show log and the cache are written;
- **sd_card**: wear and file system errors where the kernel shows them (appliance.sysinfo);
- **peer**, **clock**, **protected** (units of a pair): the other unit heard, the wall
  clocks within `selftest.max_clock_offset_ms` (and a follower's offset to the leader
  measured), the show protected. At the daemon's start these wait up to
  `selftest.peer_wait_s` for the pair to find itself.

The test runs in its own short-lived thread at the lowest real-time priority; the control
socket only starts it and reads the result from status, so the socket never waits.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .realtime import lowest_fifo_no_inherit
from .sysinfo import disk_space, storage_health
from .transport import PAUSED, PLAYING

log = logging.getLogger("backtrack.selftest")

SILENT_S = 0.5          # how long the idle writer is watched
PEER_SEEN_S = 1.0       # a leader (or follower) heard within this counts as reachable
STEMS_TIMEOUT_S = 3600.0
PASS_SHOWN_S = 5.0      # the LED shows a pass this long


@dataclass
class Check:
    name: str
    status: str           # pass | fail | warn | skip
    detail: str
    faults: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class SelfTest:
    """One self-test at a time for a daemon (appliance.service.Daemon)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self.runs = 0
        self.result: dict[str, Any] | None = None   # the last finished one
        self.running: dict[str, Any] | None = None   # {"id", "why", "started"} while running
        self.finished_mono = 0.0
        self.song_since = False   # a song started after the last result (LED: fail shown)

    # ---- asking ------------------------------------------------------------------------------
    def request(self, why: str) -> int:
        """Start a self-test (unless one runs: then that one answers); its id."""
        with self._lock:
            if self.running is not None:
                return int(self.running["id"])
            self.runs += 1
            run_id = self.runs
            self.running = {"id": run_id, "why": why, "started": round(time.time(), 3),
                            "result": "running"}
            self._thread = threading.Thread(target=self._run, args=(run_id, why),
                                            name="backtrack-selftest", daemon=True)
            self._thread.start()
        self.daemon.engine._notify("selftest")  # the LED shows it at once
        return run_id

    def status(self) -> dict[str, Any] | None:
        """For `status.selftest`: the one running, else the last result (None: never run)."""
        return dict(self.running) if self.running is not None else self.result

    def led(self) -> str | None:
        """What the LED shows of the self-test: running | pass (a few seconds) | fail (until
        a song starts or a test passes) | None."""
        if self.running is not None:
            return "running"
        r = self.result
        if r is None:
            return None
        if r["result"] == "fail":
            return None if self.song_since else "fail"
        return "pass" if time.monotonic() - self.finished_mono < PASS_SHOWN_S else None

    def song_started(self) -> None:
        self.song_since = True

    def close(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()

    # ---- the run -----------------------------------------------------------------------------
    def _run(self, run_id: int, why: str) -> None:
        cfg = self.daemon.cfg
        lowest_fifo_no_inherit(cfg.engine.realtime_priority > 0)
        t0 = time.monotonic()
        checks: list[Check] = []
        try:
            checks = self.checks(why)
        except Exception as exc:  # noqa: BLE001 - a self-test bug must say so, not hang
            log.exception("self-test failed to run")
            checks.append(Check("selftest", "fail", f"the self-test itself failed: {exc}",
                                faults=[f"self-test error: {exc}"]))
        faults = [f for c in checks for f in c.faults]
        warnings = [w for c in checks for w in c.warnings]
        result = {"id": run_id, "why": why, "result": "fail" if faults else "pass",
                  "started": self.running["started"] if self.running else round(time.time(), 3),
                  "took_s": round(time.monotonic() - t0, 3),
                  "checks": [asdict(c) for c in checks], "faults": faults,
                  "warnings": warnings}
        with self._lock:
            self.result = result
            self.running = None
            self.finished_mono = time.monotonic()
            self.song_since = False
        if faults:
            log.error("self-test (%s) FAILED in %.1f s: %s", why, result["took_s"],
                      "; ".join(faults))
        else:
            log.info("self-test (%s) passed in %.1f s%s", why, result["took_s"],
                     f" ({len(warnings)} warning(s): {'; '.join(warnings)})" if warnings else "")
        self.daemon.showlog_record("selftest", id=run_id, why=why, result=result["result"],
                                   took_s=result["took_s"], faults=faults, warnings=warnings,
                                   checks={c.name: c.status for c in checks})
        self.daemon.engine._notify("selftest")

    def checks(self, why: str) -> list[Check]:
        """Every check, in the order shown. At start the pair's checks come last and wait
        for what is left of `selftest.peer_wait_s`: the units start at about the same time."""
        t0 = time.monotonic()
        out = [self.check_stems(), self.check_device(), self.check_silent_write(),
               self.check_disk(), self.check_sd_card()]
        wait = self.daemon.cfg.selftest.peer_wait_s - (time.monotonic() - t0) \
            if why.endswith("start") else 0.0
        return out + self.check_pair(wait_s=max(0.0, wait))

    def _playing(self) -> bool:
        return self.daemon.engine.transport.current.state in (PLAYING, PAUSED)

    def check_device(self) -> Check:
        e = self.daemon.engine
        w = e.writer
        dev = self.daemon.cfg.device
        if not w.device_ok:
            why = w.device_error or "not open"
            return Check("device", "fail", why, faults=[f"device absent: {dev.name}: {why}"])
        got = getattr(w.sink, "params", None) or {}
        wrong = [f"{k} {got[k]} instead of {want}" for k, want in
                 (("rate", dev.rate), ("channels", dev.channels), ("format", dev.format))
                 if k in got and got[k] != want]
        if wrong:
            return Check("device", "fail", ", ".join(wrong),
                         faults=[f"device wrong: {dev.name}: {', '.join(wrong)}"])
        return Check("device", "pass", f"{dev.name}: {dev.channels} channels, {dev.rate} Hz, "
                     f"{dev.format}, period {dev.period} x {dev.periods}")

    def check_silent_write(self) -> Check:
        e = self.daemon.engine
        w = e.writer
        dev = self.daemon.cfg.device
        if self._playing():
            return Check("silent_write", "skip", "not while a song plays")
        if not w.device_ok:
            return Check("silent_write", "skip", "no device")
        p0, u0 = w.periods_done, w.sink.underruns
        time.sleep(SILENT_S)
        if self._playing():
            return Check("silent_write", "skip", "a song started during the test")
        periods = w.periods_done - p0
        under = w.sink.underruns - u0
        expected = SILENT_S * dev.rate / dev.period
        work = w.work_stats()
        detail = (f"{periods} periods of silence in {SILENT_S:g} s ({expected:.0f} expected), "
                  f"{under} underruns, writer p99 {work.get('p99_us')} us")
        if under:
            return Check("silent_write", "fail", detail,
                         faults=[f"underrun while writing silence: {under} in {SILENT_S:g} s"])
        if periods < 0.8 * expected:
            return Check("silent_write", "fail", detail,
                         faults=[f"device too slow: {periods} of {expected:.0f} periods "
                                 f"written in {SILENT_S:g} s"])
        return Check("silent_write", "pass", detail)

    def check_disk(self) -> Check:
        cfg = self.daemon.cfg
        need = cfg.selftest.min_free_mb
        faults, parts = [], []
        seen = set()
        for what, path in (("show log", cfg.log_dir), ("cache", cfg.cache_dir)):
            space = disk_space(path)
            if space is None:
                continue
            parts.append(f"{what} {path}: {space.free_mb:.0f} MB free")
            if space.path in seen:
                continue
            seen.add(space.path)
            if space.free_mb < need:
                faults.append(f"disk nearly full: {space.free_mb:.0f} MB free for the {what} "
                              f"({path}); selftest.min_free_mb is {need:g}")
        if not parts:
            return Check("disk", "warn", "free space not known",
                         warnings=["free disk space could not be read"])
        return Check("disk", "fail" if faults else "pass", "; ".join(parts), faults=faults)

    def check_sd_card(self) -> Check:
        faults, notes = storage_health()
        if faults:
            return Check("sd_card", "fail", "; ".join(faults + notes),
                         faults=[f"storage: {f}" for f in faults])
        if not notes:
            return Check("sd_card", "skip", "the kernel shows no wear or error counters here")
        return Check("sd_card", "pass", "; ".join(notes))

    def check_pair(self, wait_s: float = 0.0) -> list[Check]:
        d = self.daemon
        if d.cfg.peer is None:
            return [Check("peer", "skip", "not a unit of a pair")]
        node = d.peer
        if node is None:
            return [Check("peer", "fail", "hot standby did not start",
                          faults=["peer absent: hot standby did not start (see the journal)"])]
        deadline = time.monotonic() + wait_s
        while True:
            seen = node.peers_seen(PEER_SEEN_S)
            protected = node.protected
            if (seen and protected) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        out = []
        if seen:
            out.append(Check("peer", "pass", "heard: " + ", ".join(
                f"unit {u} ({role}, {age_ms:.0f} ms ago)" for u, role, age_ms in seen)))
        else:
            where = ", ".join(d.cfg.peer.peers) or "no peers configured"
            out.append(Check("peer", "fail", f"no other unit heard in {PEER_SEEN_S:g} s",
                             faults=[f"peer absent: no unit heard at {where}"]))
        offsets = node.wall_offsets_ms()
        limit = d.cfg.selftest.max_clock_offset_ms
        if not seen:
            out.append(Check("clock", "skip", "no peer heard"))
        else:
            bad = {u: o for u, o in offsets.items() if abs(o) > limit}
            parts = [f"unit {u}: wall clock {o:+.1f} ms" for u, o in offsets.items()]
            mono = node.health().get("offset_us")
            warnings = []
            if node.roles.role == "follower":
                if mono is None:
                    warnings.append("clock offset to the leader not measured yet")
                else:
                    parts.append(f"offset to the leader measured ({mono:+.0f} us, monotonic)")
            if bad:
                out.append(Check("clock", "fail", "; ".join(parts), faults=[
                    f"clock offset: unit {u} is {o:+.0f} ms off this unit's wall clock "
                    f"(limit {limit:g} ms; keep the units in step with chrony)"
                    for u, o in bad.items()]))
            else:
                out.append(Check("clock", "warn" if warnings else "pass",
                                 "; ".join(parts) or "no offsets yet", warnings=warnings))
        if protected:
            out.append(Check("protected", "pass", "a follower is locked and ready to take over"
                             if node.roles.role == "leader" else
                             "locked to the leader, ready to take over"))
        else:
            why = "; ".join(node.protection.why_not or ()) or "not known yet"
            out.append(Check("protected", "fail", why,
                             faults=[f"not protected: {why}"]))
        return out

    # ---- stems, in a child process -----------------------------------------------------------
    def check_stems(self) -> Check:
        cfg = self.daemon.cfg
        entries, seen = [], set()
        for n, song in enumerate(cfg.songs, 1):
            for st in song.stems:
                if st.file in seen:
                    continue
                seen.add(st.file)
                entries.append({"file": str(st.file), "song": n, "title": song.title})
        if not entries:
            return Check("stems", "pass", "no stems in the setlist in use")
        quick = self._playing()
        manifest = cfg.checksums_file
        req = {"manifest": str(manifest), "files": entries, "quick": quick}
        results: list[dict] = []
        stopped = ""
        try:
            child = subprocess.Popen([sys.executable, "-m", "appliance.stemsums", "verify"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            return Check("stems", "warn", f"not verified: {exc}",
                         warnings=[f"stems not verified: {exc}"])
        self._child = child
        try:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(req).encode())
            child.stdin.close()
            watch = threading.Thread(target=self._stop_child_on_play, args=(child, quick),
                                     daemon=True)
            watch.start()
            for line in child.stdout:
                try:
                    results.append(json.loads(line))
                except ValueError:
                    continue
            child.wait(timeout=STEMS_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            stopped = f"verification failed: {exc}"
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            self._child = None
        if getattr(child, "_stopped_for_song", False):
            stopped = "a song started: verification stopped"
        return self._stems_verdict(entries, results, quick, stopped, manifest)

    def _stop_child_on_play(self, child: subprocess.Popen, quick: bool) -> None:
        """The show comes first: a song that starts ends the checksum reading."""
        while child.poll() is None:
            if not quick and self._playing():
                child._stopped_for_song = True  # type: ignore[attr-defined]
                child.terminate()
                return
            time.sleep(0.05)

    @staticmethod
    def _stems_verdict(entries: list[dict], results: list[dict], quick: bool, stopped: str,
                       manifest) -> Check:
        faults, warnings = [], []
        counts: dict[str, int] = {}
        manifest_problem = results[0].get("manifest") if results else None
        for r in results:
            status = r.get("status", "?")
            counts[status] = counts.get(status, 0) + 1
            where = f"{r.get('file')} (song {r.get('song')} '{r.get('title')}')"
            if status == "missing":
                faults.append(f"stem missing: {where}: {r.get('detail')}")
            elif status in ("unreadable", "not_audio"):
                faults.append(f"stem unreadable: {where}: {r.get('detail')}")
            elif status == "changed":
                faults.append(f"stem changed: {where}: {r.get('detail')}")
            elif status == "unlisted" and not manifest_problem:
                warnings.append(f"stem without a stored checksum: {where}")
        if manifest_problem:
            warnings.append(f"stem checksums not verified: {manifest_problem}")
        if quick:
            warnings.append("stem checksums not verified: a song plays (headers read only)")
        if stopped or len(results) < len(entries):
            warnings.append(f"stems: {len(results)} of {len(entries)} verified"
                            + (f" ({stopped})" if stopped else ""))
        detail = f"{len(entries)} stems: " + ", ".join(f"{n} {s}" for s, n in
                                                        sorted(counts.items()))
        status = "fail" if faults else ("warn" if warnings else "pass")
        return Check("stems", status, detail, faults=faults, warnings=warnings)


def format_result(res: dict[str, Any]) -> str:
    """A self-test result for a person (`backtrack check --live`)."""
    lines = [f"self-test #{res.get('id')} ({res.get('why')}): "
             f"{str(res.get('result', '?')).upper()} in {res.get('took_s', 0):.1f} s"]
    for c in res.get("checks", ()):
        mark = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}.get(
            c["status"], c["status"])
        lines.append(f"  {mark}  {c['name']:<13} {c['detail']}")
    for f in res.get("faults", ()):
        lines.append(f"  fault: {f}")
    for w in res.get("warnings", ()):
        lines.append(f"  warning: {w}")
    return "\n".join(lines) + "\n"


__all__ = ["Check", "SelfTest", "format_result"]
