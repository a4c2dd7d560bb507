"""What the box says about its own health: CPU temperature, throttling, free disk, SD card.

Why: a Pi that overheats or is under-powered slows its CPU down (throttling) and that is
the first suspect after an underrun on a hot stage; a worn SD card or a full disk ends a
show log or a state file. The show log samples the first two, the self-test reads all.

Each reader takes the roots it reads (`sys_root`, `/proc/mounts`) so it can be pointed at
another tree; where the kernel or firmware does not show a value (a laptop, a container,
this test machine) the answer is None and the caller says "not shown", never an error.
Sources:

- temperature: `/sys/class/thermal/thermal_zone*/temp` (millidegrees C), the zone whose
  `type` is `cpu-thermal` (Raspberry Pi) or names a CPU/SoC, else the first one;
- throttling: the Pi firmware's `get_throttled` bits in sysfs
  (`/sys/devices/platform/soc/soc:firmware/get_throttled`), else `vcgencmd get_throttled`
  (at most every `VCGENCMD_EVERY_S`, it forks a process);
- SD / eMMC health: `/sys/block/mmcblk*/device/life_time` and `pre_eol_info` (eMMC and
  some industrial SD cards report wear there), and the ext4 error counters in
  `/sys/fs/ext4/*/errors_count`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled",
                 3: "soft temperature limit"}
"""The `get_throttled` bits that say what is happening now; bit n + 16: it has happened
since boot."""
VCGENCMD_EVERY_S = 30.0
FIRMWARE_THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def thermal_zone(sys_root: Path = Path("/sys")) -> Path | None:
    """The temperature file of the CPU's thermal zone, None when there is none."""
    zones = sorted((sys_root / "class" / "thermal").glob("thermal_zone*"))
    best = None
    for z in zones:
        if not (z / "temp").exists():
            continue
        kind = (_read(z / "type") or "").lower()
        if kind in ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp") or \
                "cpu" in kind:
            return z / "temp"
        best = best or z / "temp"
    return best


def read_temperature(zone: Path | None) -> float | None:
    """Degrees C from a zone's `temp` file (millidegrees), None when unreadable."""
    if zone is None:
        return None
    text = _read(zone)
    try:
        return round(int(text) / 1000.0, 1) if text is not None else None
    except ValueError:
        return None


def decode_throttled(bits: int) -> dict:
    """`get_throttled` bits -> what happens now and what has happened since boot."""
    return {"now": [w for b, w in THROTTLE_BITS.items() if bits >> b & 1],
            "since_boot": [w for b, w in THROTTLE_BITS.items() if bits >> (b + 16) & 1]}


class Throttling:
    """The firmware's throttling bits, from sysfs when it is there, else `vcgencmd` now
    and then (it forks), else nothing."""

    def __init__(self, sys_root: Path = Path("/sys"), vcgencmd: str | None = "vcgencmd"):
        self.file = sys_root / FIRMWARE_THROTTLED
        if not self.file.exists():
            self.file = None
        self.vcgencmd = shutil.which(vcgencmd) if vcgencmd and self.file is None else None
        self._last: int | None = None
        self._asked = -VCGENCMD_EVERY_S

    @property
    def available(self) -> bool:
        return self.file is not None or self.vcgencmd is not None

    def read(self) -> int | None:
        if self.file is not None:
            text = _read(self.file)
            try:
                return int(text, 16) if text is not None else None
            except ValueError:
                return None
        if self.vcgencmd is None:
            return None
        now = time.monotonic()
        if now - self._asked < VCGENCMD_EVERY_S:
            return self._last
        self._asked = now
        try:
            out = subprocess.run([self.vcgencmd, "get_throttled"], capture_output=True,
                                 text=True, timeout=2).stdout
            self._last = int(out.strip().partition("=")[2], 16)
        except (OSError, ValueError, subprocess.SubprocessError):
            self._last = None
        return self._last


@dataclass
class DiskSpace:
    path: str
    free_mb: float
    total_mb: float


def disk_space(path: Path) -> DiskSpace | None:
    """Free space of the file system holding `path` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        u = shutil.disk_usage(p)
    except OSError:
        return None
    return DiskSpace(str(p), round(u.free / 2**20, 1), round(u.total / 2**20, 1))


EOL = {"0x01": "normal", "0x02": "warning (80% of reserved blocks used)",
       "0x03": "urgent (90% of reserved blocks used)"}


def storage_health(sys_root: Path = Path("/sys")) -> tuple[list[str], list[str]]:
    """(faults, notes) the kernel shows about SD/eMMC wear and file system errors. Empty
    notes with no faults: the kernel shows nothing here (most SD cards)."""
    faults: list[str] = []
    notes: list[str] = []
    for dev in sorted((sys_root / "block").glob("mmcblk*")):
        d = dev / "device"
        life = _read(d / "life_time")
        eol = _read(d / "pre_eol_info")
        name = dev.name
        if life:
            # two estimates (type A and B cells), 0x01 = 0-10 % of life used ... 0x0B = past it
            try:
                worst = max(int(x, 16) for x in life.split())
            except ValueError:
                worst = 0
            used = "past its rated life" if worst >= 0x0B else \
                f"{(worst - 1) * 10}-{worst * 10} % of its rated life used"
            (faults if worst >= 0x09 else notes).append(f"{name}: {used} (life_time {life})")
        if eol:
            text = EOL.get(eol, eol)
            (faults if eol in ("0x02", "0x03") else notes).append(
                f"{name}: reserved blocks {text}")
    for fs in sorted((sys_root / "fs" / "ext4").glob("*")):
        count = _read(fs / "errors_count")
        if count is None:
            continue
        try:
            n = int(count)
        except ValueError:
            continue
        if n > 0:
            faults.append(f"ext4 {fs.name}: {n} file system error(s) recorded "
                          "(run fsck; the card may be failing)")
        else:
            notes.append(f"ext4 {fs.name}: no file system errors recorded")
    return faults, notes


__all__ = ["DiskSpace", "THROTTLE_BITS", "Throttling", "decode_throttled", "disk_space",
           "read_temperature", "storage_health", "thermal_zone"]
