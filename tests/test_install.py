"""deploy/: the unit file passes `systemd-analyze verify`, and `install.sh --root DIR` lays
out the expected files, with the expected owners, idempotently, and uninstalls cleanly.

What is not covered here: the apt and venv steps (--root skips them: no network in tests)
and starting the unit under a real systemd (there is none in the test container). The
daemon's side of Type=notify, the watchdog and the signals is tested in test_systemd.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INSTALL = DEPLOY / "install.sh"
VENV_BACKTRACK = Path(sys.executable).parent / "backtrack"


def unit_options(path: Path) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            opts.setdefault(k.strip(), []).append(v.strip())
    return opts


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    """verify insists that ExecStart's program exists; /opt/backtrack/venv does not exist on
    a test machine, so the copy verified here points ExecStart at this venv's `backtrack`
    (the one line changed; everything else is checked as shipped)."""
    assert VENV_BACKTRACK.exists()
    text = (DEPLOY / "backtrack.service").read_text()
    assert text.count("ExecStart=/opt/backtrack/venv/bin/backtrack run ") == 1
    unit = tmp_path / "backtrack.service"
    unit.write_text(text.replace("ExecStart=/opt/backtrack/venv/bin/backtrack",
                                 f"ExecStart={VENV_BACKTRACK}"))
    res = verify(unit)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    # the shipped file as is: the only complaint is the program not being installed here
    res = verify(DEPLOY / "backtrack.service")
    errs = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert all("/opt/backtrack/venv/bin/backtrack" in ln for ln in errs), errs
    res = verify(DEPLOY / "backtrack-cpufreq.service")
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_unit_file_grants_what_the_engine_needs():
    o = unit_options(DEPLOY / "backtrack.service")
    one = {k: v[-1] for k, v in o.items()}
    assert one["Type"] == "notify" and one["Restart"] == "always"
    assert one["WatchdogSec"].rstrip("s").isdigit() and int(one["WatchdogSec"].rstrip("s")) >= 2
    assert one["LimitMEMLOCK"] == "infinity"  # the engine mlockall()s only then
    assert int(one["LimitRTPRIO"]) >= 70        # engine.realtime_priority default
    assert one["RestrictRealtime"] == "no"
    assert one["User"] == "backtrack" and set(one["SupplementaryGroups"].split()) >= {
        "audio", "gpio"}
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["RuntimeDirectory"] == "backtrack"  # /run/backtrack/control.sock
    assert one.get("PrivateDevices", "no") == "no"  # would hide /dev/snd
    assert {"char-alsa rw", "char-gpiochip rw"} <= set(o["DeviceAllow"])
    assert "AF_INET" in one["RestrictAddressFamilies"]  # the peer protocol
    assert "MemoryDenyWriteExecute" not in one
    example = config_mod.load(DEPLOY / "config.example.yaml")
    assert example.control.socket.startswith("/run/backtrack/")
    assert str(example.state_file).startswith("/var/lib/backtrack/")  # StateDirectory
    assert str(example.cache_dir).startswith("/var/cache/backtrack")  # CacheDirectory


def test_install_sh_is_clean_under_shellcheck():
    res = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


AS_ROOT = os.geteuid() == 0


def run_install(*args: str, root: Path | None = None) -> subprocess.CompletedProcess:
    """install.sh must run as root (it creates a user and chowns folders). Without root,
    fakeroot fakes it, keeping the faked owners in a file beside the target folder."""
    cmd = [str(INSTALL), *args]
    if not AS_ROOT:
        assert shutil.which("fakeroot"), "tests of install.sh need root or fakeroot"
        fr = ["fakeroot"]
        if root is not None:
            state = root.parent / "fakeroot.state"
            fr += (["-i", str(state)] if state.exists() else []) + ["-s", str(state)]
        cmd = [*fr, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def owner(root: Path, path: Path) -> tuple[int, int, int]:
    """(uid, gid, permission bits) as the installer left them (faked ones under fakeroot)."""
    if AS_ROOT:
        st = path.stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
    out = subprocess.run(["fakeroot", "-i", str(root.parent / "fakeroot.state"), "--",
                          "stat", "-c", "%u %g %a", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2], 8)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: type, mode, owner, mtime, contents or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                            p.read_bytes())
    return out


def ids(root: Path, db: str, name: str) -> list[str]:
    for line in (root / "etc" / db).read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return f
    raise AssertionError(f"{name} not in {db}")


def test_install_root_lays_out_the_appliance_and_a_second_run_changes_nothing(tmp_path):
    root = tmp_path / "img"
    res = run_install("--root", str(root), root=root)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "install done" in res.stdout

    expected_files = {
        "etc/systemd/system/backtrack.service": DEPLOY / "backtrack.service",
        "etc/systemd/system/backtrack-cpufreq.service": DEPLOY / "backtrack-cpufreq.service",
        "etc/systemd/system.conf.d/backtrack-watchdog.conf":
            DEPLOY / "systemd" / "backtrack-watchdog.conf",
        "etc/udev/rules.d/60-backtrack-gpio.rules": DEPLOY / "udev" / "60-backtrack-gpio.rules",
        "etc/udev/rules.d/99-backtrack-usb-audio.rules":
            DEPLOY / "udev" / "99-backtrack-usb-audio.rules",
        "etc/backtrack/config.yaml": DEPLOY / "config.example.yaml",
        "usr/lib/sysusers.d/backtrack.conf": DEPLOY / "sysusers.d" / "backtrack.conf",
        "usr/lib/tmpfiles.d/backtrack.conf": DEPLOY / "tmpfiles.d" / "backtrack.conf",
        "usr/share/doc/backtrack/deploy-README.md": DEPLOY / "README.md",
    }
    for rel, src in expected_files.items():
        assert (root / rel).read_bytes() == src.read_bytes(), rel
    for rel in ("hardware/README.md", "hardware/pinout.svg", "examples/backtrack-leader.conf"):
        assert (root / "usr/share/doc/backtrack" / rel).is_file(), rel
    # enabled the way systemctl does it
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "backtrack.service") == "/etc/systemd/system/backtrack.service"
    assert os.readlink(wants / "backtrack-cpufreq.service") == \
        "/etc/systemd/system/backtrack-cpufreq.service"
    assert os.readlink(root / "usr/local/bin/backtrack") == "/opt/backtrack/venv/bin/backtrack"
    # the user, in audio and gpio; the folders it owns
    user = ids(root, "passwd", "backtrack")
    assert user[5] == "/var/lib/backtrack" and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    assert "backtrack" in ids(root, "group", "audio")[3].split(",")
    assert "backtrack" in ids(root, "group", "gpio")[3].split(",")
    assert owner(root, root / "srv/backtrack/media") == (uid, gid, 0o2775)
    assert owner(root, root / "etc/backtrack/config.yaml") == (0, gid, 0o640)
    assert owner(root, root / "etc/backtrack") == (0, gid, 0o750)
    # the installed config is valid as it is
    config_mod.load(root / "etc/backtrack/config.yaml")

    before = snapshot(root)
    res2 = run_install("--root", str(root), root=root)
    assert res2.returncode == 0, res2.stderr
    assert res2.stdout.strip().endswith("0 change(s)"), res2.stdout
    after = snapshot(root)
    assert after == before, sorted(k for k in set(before) | set(after)
                                   if before.get(k) != after.get(k))


def test_install_keeps_the_bands_config_and_updates_changed_files(tmp_path):
    root = tmp_path / "img"
    assert run_install("--root", str(root), root=root).returncode == 0
    cfg = root / "etc/backtrack/config.yaml"
    cfg.write_text(cfg.read_text() + "# edited on the box\n")
    unit = root / "etc/systemd/system/backtrack.service"
    unit.write_text("stale\n")
    res = run_install("--root", str(root), root=root)
    assert res.returncode == 0
    assert cfg.read_text().endswith("# edited on the box\n")
    assert unit.read_bytes() == (DEPLOY / "backtrack.service").read_bytes()
    assert "wrote /etc/systemd/system/backtrack.service" in res.stdout
    assert res.stdout.strip().endswith("1 change(s)"), res.stdout


def test_uninstall_keeps_the_show_and_purge_removes_it(tmp_path):
    root = tmp_path / "img"
    assert run_install("--root", str(root), root=root).returncode == 0
    (root / "srv/backtrack/media/song.wav").write_bytes(b"RIFF")
    res = run_install("--root", str(root), "--uninstall", root=root)
    assert res.returncode == 0, res.stderr
    for gone in ("etc/systemd/system/backtrack.service",
                 "etc/systemd/system/multi-user.target.wants/backtrack.service",
                 "etc/systemd/system.conf.d/backtrack-watchdog.conf",
                 "usr/local/bin/backtrack", "usr/share/doc/backtrack"):
        assert not os.path.lexists(root / gone), gone
    assert (root / "etc/backtrack/config.yaml").exists()
    assert (root / "srv/backtrack/media/song.wav").exists()
    ids(root, "passwd", "backtrack")
    again = run_install("--root", str(root), "--uninstall", root=root)
    assert again.stdout.strip().endswith("0 change(s)"), again.stdout
    res = run_install("--root", str(root), "--uninstall", "--purge", root=root)
    assert res.returncode == 0, res.stderr
    assert not (root / "etc/backtrack").exists() and not (root / "srv/backtrack").exists()
    assert "backtrack:" not in (root / "etc/passwd").read_text()
    assert "\nbacktrack:" not in "\n" + (root / "etc/group").read_text()


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option"),
    (["--chrony", "sideways"], "leader or follower"),
    (["--root", "/"], "live system"),
])
def test_install_rejects_bad_options(args, message):
    res = run_install(*args)
    assert res.returncode != 0 and message in res.stderr


def test_install_chrony_role_snippet(tmp_path):
    root = tmp_path / "img"
    assert run_install("--root", str(root), "--chrony", "follower", root=root).returncode == 0
    assert (root / "etc/chrony/conf.d/backtrack-follower.conf").read_bytes() == \
        (DEPLOY / "chrony/backtrack-follower.conf").read_bytes()
    assert not (root / "etc/chrony/conf.d/backtrack-leader.conf").exists()
