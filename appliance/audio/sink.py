"""The sound card: a pyalsaaudio PCM opened exactly as configured, written a period at a
time, with underruns recovered and a vanished device turned into `DeviceLost` (the engine
keeps the song clock running and reopens it).

Facts relied on (pyalsaaudio 0.11, checked in its C source): `write()` takes any buffer
(a memoryview of a reused bytearray, so no copy and no allocation), releases the GIL while
`snd_pcm_writei` blocks, and on an underrun prepares the stream and returns -EPIPE without
having written the data. `avail()` gives the free space, so queued = buffer - avail.
"""

from __future__ import annotations

import errno
import select
import time

import alsaaudio

from ..config import Device

ALSA_FORMATS = {
    "S16_LE": alsaaudio.PCM_FORMAT_S16_LE,
    "S24_3LE": alsaaudio.PCM_FORMAT_S24_3LE,
    "S32_LE": alsaaudio.PCM_FORMAT_S32_LE,
    "FLOAT_LE": alsaaudio.PCM_FORMAT_FLOAT_LE,
}


class DeviceError(Exception):
    """The device cannot be opened as configured; the message says why in plain words."""


class DeviceLost(Exception):
    """The device went away while playing (USB unplugged, driver error)."""


def open_pcm(device: Device, nonblock: bool = False) -> alsaaudio.PCM:
    """Open the PCM and check it took the configured parameters (a plug layer silently
    converting 48k to 44.1k would shift every cue)."""
    try:
        pcm = alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK,
                            mode=alsaaudio.PCM_NONBLOCK if nonblock else alsaaudio.PCM_NORMAL,
                            rate=device.rate, channels=device.channels,
                            format=ALSA_FORMATS[device.format], periodsize=device.period,
                            periods=device.periods, device=device.name)
    except alsaaudio.ALSAAudioError as exc:
        raise DeviceError(describe_open_error(device, exc)) from None
    info = pcm.info()
    wrong = []
    if info.get("rate") != device.rate:
        wrong.append(f"rate {info.get('rate')} instead of {device.rate}")
    if info.get("channels") != device.channels:
        wrong.append(f"{info.get('channels')} channels instead of {device.channels}")
    if info.get("format_name") != device.format:
        wrong.append(f"format {info.get('format_name')} instead of {device.format}")
    if wrong:
        pcm.close()
        raise DeviceError(f"device {device.name} does not accept the configuration: "
                          + ", ".join(wrong))
    return pcm


def describe_open_error(device: Device, exc: Exception) -> str:
    text = str(exc)
    low = text.lower()
    if "no such file" in low or "no such device" in low or "cannot find card" in low \
            or "unknown pcm" in low:
        return f"device {device.name} is not present (is the interface plugged in?): {text}"
    if "busy" in low:
        return f"device {device.name} is busy (another program is using it): {text}"
    if "invalid argument" in low:
        return (f"device {device.name} refuses rate {device.rate}, {device.channels} channels, "
                f"{device.format}, period {device.period} x {device.periods}: {text}")
    return f"cannot open device {device.name}: {text}"


class AlsaSink:
    """One open PCM. Only the writer thread calls `write`/`queued`."""

    def __init__(self, device: Device):
        self.device = device
        self.pcm: alsaaudio.PCM | None = None
        self._poll: select.poll | None = None
        self.buffer_frames = device.buffer_frames
        self.underruns = 0
        self.params: dict = {}

    def open(self) -> None:
        self.pcm = open_pcm(self.device)
        info = self.pcm.info()
        # what the card took, as ALSA says (the self-test shows it)
        self.params = {"rate": info.get("rate"), "channels": info.get("channels"),
                       "format": info.get("format_name")}
        self.buffer_frames = int(info.get("buffer_size") or self.device.buffer_frames)
        self._poll = select.poll()
        for fd, events in self.pcm.polldescriptors():
            self._poll.register(fd, events)
        self._stall_s = max(0.1, 4 * self.buffer_frames / self.device.rate)
        # Wait in poll up to the stall limit: a short timeout only re-arms a kernel timer
        # every period (at real-time priority that is a reprogrammed timer each time).
        self._poll_ms = int(self._stall_s * 1000) + 1

    def wait_space(self, frames: int) -> int:
        """Block (GIL released, in poll) until `frames` can be written without blocking, and
        return the free space. The writer renders a period only after this returns, so a
        command that arrives while it waits is in the very next period: latency is the
        frames already queued, never queued + one rendered period."""
        pcm = self.pcm
        if pcm is None:
            raise DeviceLost("device is closed")
        deadline = time.monotonic() + self._stall_s
        while True:
            try:
                avail = pcm.avail()
            except alsaaudio.ALSAAudioError as exc:
                raise DeviceLost(str(exc)) from None
            if avail < 0 or avail >= frames:
                return avail  # negative: an underrun that write() recovers and counts
            if time.monotonic() > deadline:
                # A card that stops taking audio without an error (a USB interface half
                # gone, a sound server that died) would block write() for ever.
                raise DeviceLost(f"the device took no audio for {self._stall_s * 1000:.0f} ms")
            if avail >= self.device.period:
                # poll wakes at avail_min (one period) and stays readable above it, so wait
                # for the rest by the clock.
                time.sleep(max(0.0002, (frames - avail) / self.device.rate))
                continue
            ready = self._poll.poll(self._poll_ms)
            if ready:
                # Plugins (jack, dmix) signal through a pipe that only their revents hook
                # drains; without this call the fd stays readable and poll spins.
                try:
                    pcm.polldescriptors_revents(ready)
                except (alsaaudio.ALSAAudioError, TypeError, ValueError):
                    pass

    @property
    def is_open(self) -> bool:
        return self.pcm is not None

    def write(self, data, frames: int) -> None:
        """Hand one block to ALSA, blocking while the buffer is full. An underrun is
        counted and the same data written again (it was not taken)."""
        pcm = self.pcm
        if pcm is None:
            raise DeviceLost("device is closed")
        for _attempt in range(3):
            try:
                res = pcm.write(data)
            except alsaaudio.ALSAAudioError as exc:
                raise DeviceLost(str(exc)) from None
            if res == -errno.EPIPE:
                self.underruns += 1
                continue
            if res == frames:
                return
            if res >= 0:
                # A short write (signal or non-blocking): wait a little and retry the rest.
                data = data[res * (len(data) // frames):]
                frames -= res
                time.sleep(0.0005)
                continue
        raise DeviceLost("device does not accept data")

    def queued(self) -> int:
        """Frames written but not yet played (the device delay)."""
        pcm = self.pcm
        if pcm is None:
            return 0
        try:
            avail = pcm.avail()
        except alsaaudio.ALSAAudioError:
            return 0
        if avail < 0:
            return 0
        return max(0, self.buffer_frames - avail)

    def drain(self, timeout_s: float = 1.0) -> None:
        """Let what is queued play out, but never wait for ever (pyalsaaudio's own drain,
        and its close(), block without limit on a device that stopped taking audio)."""
        deadline = time.monotonic() + timeout_s
        while self.pcm is not None and time.monotonic() < deadline:
            try:
                avail = self.pcm.avail()
            except alsaaudio.ALSAAudioError:
                return
            if avail < 0 or avail >= self.buffer_frames:
                return
            time.sleep(self.device.period / self.device.rate)

    def close(self) -> None:
        """Close at once: drop what is queued first, because pyalsaaudio's close() drains
        and a vanished device never drains."""
        if self.pcm is not None:
            try:
                self.pcm.drop()
            except alsaaudio.ALSAAudioError:
                pass
            try:
                self.pcm.close()
            except alsaaudio.ALSAAudioError:
                pass
            self.pcm = None
            self._poll = None
