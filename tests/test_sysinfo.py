"""What the box says about its health (appliance.sysinfo), read from sysfs trees laid out
as a Raspberry Pi's kernel lays them out (this machine has none of them), and the checksum
manifest (appliance.stemsums)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from appliance.stemsums import read_manifest, verify, write_manifest
from appliance.sysinfo import (
    Throttling,
    decode_throttled,
    disk_space,
    read_temperature,
    storage_health,
    thermal_zone,
)


def pi_sysfs(root: Path, temp: str = "52612", throttled: str = "50005",
             life: str = "0x02 0x01", eol: str = "0x01", ext4_errors: str = "0") -> Path:
    (root / "class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "class/thermal/thermal_zone0/type").write_text("cpu-thermal\n")
    (root / "class/thermal/thermal_zone0/temp").write_text(temp + "\n")
    fw = root / "devices/platform/soc/soc:firmware"
    fw.mkdir(parents=True)
    (fw / "get_throttled").write_text(throttled + "\n")
    dev = root / "block/mmcblk0/device"
    dev.mkdir(parents=True)
    (dev / "life_time").write_text(life + "\n")
    (dev / "pre_eol_info").write_text(eol + "\n")
    (root / "fs/ext4/mmcblk0p2").mkdir(parents=True)
    (root / "fs/ext4/mmcblk0p2/errors_count").write_text(ext4_errors + "\n")
    return root


def test_a_pis_temperature_and_throttling(tmp_path):
    root = pi_sysfs(tmp_path)
    assert read_temperature(thermal_zone(root)) == 52.6
    t = Throttling(root, vcgencmd=None)
    assert t.available and t.read() == 0x50005
    d = decode_throttled(0x50005)
    assert d["now"] == ["under-voltage", "throttled"]
    assert d["since_boot"] == ["under-voltage", "throttled"]


def test_nothing_shown_is_none_not_an_error(tmp_path):
    assert thermal_zone(tmp_path) is None and read_temperature(None) is None
    t = Throttling(tmp_path, vcgencmd="no-such-vcgencmd")
    assert not t.available and t.read() is None
    assert storage_health(tmp_path) == ([], [])
    assert disk_space(tmp_path / "not" / "yet" / "made").free_mb > 0


def test_sd_card_wear_and_filesystem_errors(tmp_path):
    faults, notes = storage_health(pi_sysfs(tmp_path / "ok"))
    assert not faults and any("10-20 % of its rated life used" in n for n in notes)
    faults, _notes = storage_health(pi_sysfs(tmp_path / "worn", life="0x0A 0x03", eol="0x02",
                                             ext4_errors="3"))
    text = "\n".join(faults)
    assert "90-100 % of its rated life" in text and "reserved blocks warning" in text
    assert "3 file system error(s)" in text


def test_manifest_is_sha256sum_format_and_verify_names_each_case(tmp_path):
    files = []
    for k in range(3):
        f = tmp_path / "songs" / f"stem{k}.wav"
        f.parent.mkdir(exist_ok=True)
        sf.write(str(f), np.full((1000, 1), 0.1 * (k + 1), np.float32), 48000)
        files.append(f)
    manifest = tmp_path / "checksums.sha256"
    done, problems = write_manifest(manifest, files)
    assert done == 3 and not problems
    assert subprocess.run(["sha256sum", "--quiet", "-c", manifest.name],
                          cwd=tmp_path).returncode == 0
    assert set(read_manifest(manifest)) == set(files)
    files[0].unlink()
    sf.write(str(files[1]), np.full((1000, 1), 0.5, np.float32), 48000)
    extra = tmp_path / "songs" / "new.wav"
    sf.write(str(extra), np.zeros((10, 1), np.float32), 48000)
    junk = tmp_path / "songs" / "junk.wav"
    junk.write_bytes(b"not audio at all")
    entries = [{"file": str(f), "song": 1, "title": "A"} for f in (*files, extra, junk)]
    got = {Path(r["file"]).name: r["status"] for r in verify(entries, manifest)}
    assert got == {"stem0.wav": "missing", "stem1.wav": "changed", "stem2.wav": "ok",
                   "new.wav": "unlisted", "junk.wav": "not_audio"}
    quick = {Path(r["file"]).name: r["status"] for r in verify(entries, manifest, quick=True)}
    assert quick["stem1.wav"] == "unchecked" and quick["stem0.wav"] == "missing"
    first = next(verify(entries, tmp_path / "none.sha256"))
    assert "no checksums stored" in first["manifest"]
