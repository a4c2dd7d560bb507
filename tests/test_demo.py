"""`make demo`'s player: on a machine without a sound card (CI, this one), or with `--device
virtual` anywhere, it starts its own virtual card, generates the demo set and plays it with a
status line, then stops cleanly."""

from __future__ import annotations

import subprocess
import sys


def test_demo_plays_on_a_private_virtual_card(tmp_path):
    out = subprocess.run([sys.executable, "-m", "appliance", "demo", "--dir", str(tmp_path / "set"),
                          "--seconds", "4", "--device", "virtual"],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    assert "private virtual card" in text
    assert "playing" in text and "demo stopped" in text
    assert "Traceback" not in text
    assert (tmp_path / "set").is_dir()
