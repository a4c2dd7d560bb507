"""`backtrack render`: write exactly what `run` would play, offline and much faster than real
time, so a band can listen to its show at home.

Uses the live engine's own pieces (SongReader, mix_into, the decoder's overlays for click,
timecode and voice guide, Converter, the writer's crossfade gains); the WAV's data chunk is
the very byte stream the sound card would be handed (`Converter.convert`), so it holds the
device's samples bit for bit (S16 -> 16-bit PCM, S24_3LE -> 24-bit, S32 -> 32-bit, FLOAT ->
32-bit float; RF64 beyond 4 GiB). `--script` adds the presses of jumps and vamps
(`renderscript` decides where the engine would switch; `_play` plays the switches as the
writer does).
"""

from __future__ import annotations

import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio.crossfade import equal_power, fade_frames
from .audio.formats import FORMAT_INFO, Converter
from .audio.overlays import Overlays, make_spoken_cues, overlays_for
from .audio.source import SongReader
from .config import Config, load
from .errors import UserError
from .renderscript import Plan, parse_script, plan_script
from .songfile import Song

BLOCK = 65536


def song_numbers(spec: str, nsongs: int) -> list[int]:
    """'all' or a 1-based song number -> 0-based indexes."""
    if spec == "all":
        return list(range(nsongs))
    try:
        n = int(spec)
    except ValueError:
        raise UserError(f"--song must be a song number (1 to {nsongs}) or 'all', not '{spec}'") from None
    if not 1 <= n <= nsongs:
        raise UserError(f"there is no song {n}; songs are numbered 1 to {nsongs}")
    return [n - 1]


_GUID_TAIL = bytes.fromhex("00001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_* after Data1


class WavWriter:
    """Device-format bytes straight into a WAV file, header patched on close.

    libsndfile would convert the samples once more on the way out (for 24-bit that cost as
    much as the whole mix); here the bytes are written as they are. WAVE_FORMAT_EXTENSIBLE
    for more than 2 channels or more than 16 bits (as Microsoft asks), RF64 when
    the data may exceed 4 GiB (decided from `frames_hint`, the length known in advance)."""

    def __init__(self, path: Path, rate: int, channels: int, fmt: str, frames_hint: int = 0):
        sample_bytes, bits = FORMAT_INFO[fmt]
        self.rate, self.channels = rate, channels
        self.float = bits == 0
        self.bits = 8 * sample_bytes
        self.block_align = sample_bytes * channels
        self.rf64 = frames_hint * self.block_align > 0xFFFFFFFF - (1 << 20)
        self.frames = 0
        self._bytes = 0
        self._fh = open(path, "wb")  # closed in close()
        self._fh.write(self._header())

    def _header(self) -> bytes:
        extensible = self.channels > 2 or self.bits > 16
        tag = 3 if self.float else 1
        fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, self.channels, self.rate,
                          self.rate * self.block_align, self.block_align, self.bits)
        if extensible:
            fmt += struct.pack("<HHI", 22, self.bits, 0) + struct.pack("<I", tag) + _GUID_TAIL
        elif self.float:
            fmt += struct.pack("<H", 0)
        data = self._bytes
        big = self.rf64
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
        if self.float and not big:  # RF64 keeps the frame count in ds64 instead
            chunks += b"fact" + struct.pack("<II", 4, self.frames)
        head = b"WAVE"
        if big:
            head += b"ds64" + struct.pack("<I", 28)
            riff_size = 4 + 36 + len(chunks) + 8 + data + (data & 1)
            head += struct.pack("<QQQI", riff_size, data, self.frames, 0)
        riff_size = 4 + (36 if big else 0) + len(chunks) + 8 + data + (data & 1)
        return ((b"RF64" if big else b"RIFF")
                + struct.pack("<I", 0xFFFFFFFF if big else riff_size)
                + head + chunks + b"data" + struct.pack("<I", 0xFFFFFFFF if big else data))

    def write(self, data: memoryview | bytes) -> None:
        self._fh.write(data)
        self._bytes += len(data)
        self.frames = self._bytes // self.block_align

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            if self._bytes & 1:
                self._fh.write(b"\0")  # chunks are word-aligned; the pad is not data
            if not self.rf64 and self._bytes > 0xFFFFFFFF - 1024:
                raise OSError("more than 4 GiB of audio; cannot write it as WAV")
            self._fh.seek(0)
            self._fh.write(self._header())
        finally:
            self._fh.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Source:
    """One song from one frame on, as a slot of the live engine holds it: the stems' mix plus
    what the decoder generates from the song frame (click, timecode, spoken cues), in
    device bytes. A jump or a vamp's turn starts another one, as the engine uses another
    slot, and the one left keeps being read under the crossfade."""

    def __init__(self, song: Song, cfg: Config, frame: int, overlays: Overlays | None,
                 conv: Converter, reader: SongReader | None = None):
        self.reader = reader or SongReader(song, cfg.device, cfg.cache_dir, BLOCK)
        self.reader.seek(frame)
        self.overlays = overlays
        self.conv = conv
        self._mix = np.zeros((BLOCK, cfg.device.channels), np.float32)

    @property
    def position(self) -> int:
        return self.reader.position

    def read(self, n: int, raw: np.ndarray) -> int:
        """Up to n (<= BLOCK) frames as device bytes into raw[:n]; fewer only at the song's
        end. Mixed, overlaid and converted as the decode thread does (`Decoder._step`)."""
        done = 0
        while done < n:
            frame0 = self.reader.position
            got = self.reader.read_into(self._mix[:n - done])
            if got == 0:
                break
            mix = self._mix[:got]
            if self.overlays is not None:
                self.overlays.render(frame0, mix)
            self.conv.convert(mix, out=raw[done:done + got])
            done += got
        return done

    def close(self) -> None:
        self.reader.close()


@dataclass
class _Job:
    song: Song
    reader: SongReader
    plan: Plan
    overlays: Overlays | None


def _plan(cfg: Config, song: Song, reader: SongReader, start: int, script: str | None
          ) -> Plan:
    if script is None:
        return Plan(start, (), max(0, reader.frames - start))
    st = song.structure
    presses = parse_script(script, st, cfg.device.rate, song.title)
    return plan_script(presses, st, reader.frames, start, cfg.device.rate, song.title)


def render(cfg: Config, songs: list[int], out: Path, progress=None,
           script: str | None = None) -> dict:
    """Render the songs back to back (as `after: next` would play them) into one WAV, each
    from where the box starts it: its count-in when `play` starts it from cued (the first
    song, and one after a song with `after: stop`), else its first frame. With `script`
    (one song), the presses it lists are made as the song reaches them."""
    dev = cfg.device
    chosen = [cfg.songs[i] for i in songs]
    # the decoder only reads spoken cues from the cache; on the box the cache warmer has
    # made them before the song plays
    _made, unspoken = make_spoken_cues(chosen, dev.rate, cfg.cache_dir)
    notes = [f"song '{s.title}': no spoken cue for section '{name}' ({why}); it is not "
             "announced" for s, name, why in unspoken]
    readers: list[SongReader] = []
    try:
        jobs: list[_Job] = []
        for k, song in enumerate(chosen):
            st = song.structure
            counted = k == 0 or chosen[k - 1].after == "stop"
            start = st.count_in_start() if counted and st is not None else 0
            reader = SongReader(song, dev, cfg.cache_dir, BLOCK)
            readers.append(reader)
            plan = _plan(cfg, song, reader, start, script)
            try:
                overlays = overlays_for(song, dev.rate, cfg.cache_dir, BLOCK)
            except Exception as exc:  # noqa: BLE001 - as in the decoder: the song plays on
                overlays = None
                notes.append(f"song '{song.title}': click, timecode or voice guide not "
                             f"generated: {exc}")
            jobs.append(_Job(song, reader, plan, overlays))
        total = sum(j.plan.frames for j in jobs)
        conv = Converter(dev.format, dev.channels, BLOCK)
        xconv = Converter(dev.format, dev.channels, BLOCK)
        problems: list[str] = []
        done = 0

        def moved(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        out.parent.mkdir(parents=True, exist_ok=True)
        with WavWriter(out, dev.rate, dev.channels, dev.format, total) as f:
            for job in jobs:
                _play(cfg, job, f, conv, xconv, moved)
                problems.extend(p for p in job.reader.problems if p not in problems)
    finally:
        for reader in readers:
            reader.close()
    log = [(j.song.title, [(t / dev.rate, text) for t, text in j.plan.log]) for j in jobs]
    return {"frames": done, "seconds": done / dev.rate,
            "clipped": conv.clipped + xconv.clipped, "problems": problems, "notes": notes,
            "log": log}


def _play(cfg: Config, job: _Job, f: WavWriter, conv: Converter, xconv: Converter,
          moved) -> None:
    """One song's plan into the WAV, as the writer plays it: the playing source's bytes as
    they are; at a switch the new source from its frame, and under the crossfade both
    brought back to float, weighted by the shared equal-power gains and converted again,
    in the writer's order of operations (`Writer._crossfade`), so every sample is the
    box's."""
    ch = cfg.device.channels
    fb = conv.frame_bytes
    st = job.song.structure
    g_out, g_in = equal_power(fade_frames(st.crossfade_ms if st is not None else None,
                                          cfg.device.rate))
    raw_new = np.zeros((BLOCK, fb), np.uint8)
    raw_old = np.zeros((BLOCK, fb), np.uint8)
    f_new = np.zeros((BLOCK, ch), np.float32)
    f_old = np.zeros((BLOCK, ch), np.float32)
    active = _Source(job.song, cfg, job.plan.start, job.overlays, conv, job.reader)
    old: _Source | None = None
    xpos = 0
    switches = list(job.plan.switches)
    try:
        while True:
            sw = switches[0] if switches else None
            if sw is not None and active.position >= sw.at:
                # the writer's _begin_crossfade: a fade still running loses its old side
                if old is not None:
                    old.close()
                old, xpos = active, 0
                active = _Source(job.song, cfg, sw.to, job.overlays, conv)
                switches.pop(0)
                continue
            n = BLOCK if sw is None else min(BLOCK, sw.at - active.position)
            if old is not None:
                n = min(n, len(g_in) - xpos)
            got = active.read(n, raw_new)
            if got == 0:
                break  # the song's end
            if old is None:
                f.write(memoryview(raw_new[:got].reshape(-1)))
            else:
                m = old.read(got, raw_old)
                seg, tmp = f_new[:got], f_old[:got]
                conv.dequantize(raw_new[:got], seg)
                if m:
                    conv.dequantize(raw_old[:m], tmp[:m])
                tmp[m:] = 0.0
                np.multiply(seg, g_in[xpos:xpos + got], out=seg)
                np.multiply(tmp, g_out[xpos:xpos + got], out=tmp)
                np.add(seg, tmp, out=seg)
                f.write(xconv.convert(seg))
                xpos += got
                if xpos >= len(g_in):
                    old.close()
                    old = None
            moved(got)
    finally:
        if old is not None:
            old.close()
        if active.reader is not job.reader:
            active.close()


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60.0)
    return f"{int(m)}:{s:06.3f}"


def main(config: str, song: str, out: str, script: str | None = None) -> int:
    cfg = load(config)
    idx = song_numbers(song, len(cfg.songs))
    if script is not None and len(idx) != 1:
        raise UserError("--script plays the presses in one song: give --song N, not all")
    tty = sys.stderr.isatty()
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        if tty and total:
            print(f"\rrendering {done / cfg.device.rate:7.1f} s of {total / cfg.device.rate:.1f} s"
                  f" ({100 * done / total:3.0f}%)", end="", file=sys.stderr, flush=True)

    try:
        result = render(cfg, idx, Path(out), progress, script)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    if tty:
        print(file=sys.stderr)
    took = time.monotonic() - t0
    for p in result["problems"]:
        print(f"warning: {p} (rendered as silence)", file=sys.stderr)
    for n in result["notes"]:
        print(f"warning: {n}", file=sys.stderr)
    if result["clipped"]:
        print(f"warning: {result['clipped']} samples clipped in the mix", file=sys.stderr)
    if script is not None:
        for title, lines in result["log"]:
            print(f"{title}:")
            for seconds, text in lines:
                print(f"  {_clock(seconds)}  {text}")
    speed = result["seconds"] / took if took > 0 else float("inf")
    print(f"wrote {out}: {result['seconds']:.2f} s, {cfg.device.channels} channels, "
          f"{cfg.device.format}, {speed:.0f}x real time")
    return 0
