"""deploy/: the unit file passes `systemd-analyze verify`, and `install.sh --root DIR` lays
out the expected files, with the expected owners, idempotently, and uninstalls cleanly; it
never restarts a player that is in the middle of a song (a real daemon playing on the JACK
sound card); the pair drop-in follows the config's peer: section; the Python packages are
installed pinned by deploy/constraints.txt, from a wheelhouse when asked.

What is not covered here: apt, and pip for real (--root skips them: no network in tests;
the pip command lines are checked against a stand-in pip), and starting the unit under a
real systemd (there is none in the test container: under --root install.sh says what it
would restart). The daemon's side of Type=notify, the watchdog and the signals is tested
in test_systemd.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from appliance import config as config_mod
from tests.showkit import DaemonProcess, make_show, wait_for

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


def install_cmd(*args: str, root: Path | None = None) -> list[str]:
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
    return cmd


def run_install(*args: str, root: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(install_cmd(*args, root=root), capture_output=True, text=True,
                          timeout=120)


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


# --------------------------------------------------------------------------------------------
# The restart: never in the middle of a song


RESTART = "would run: systemctl restart backtrack.service"


def test_install_never_restarts_a_player_in_the_middle_of_a_song(tmp_path, jack_audio):
    """A real daemon plays on the JACK card; its control socket is where the installed
    config says (/run/backtrack/control.sock, inside the --root folder). Under --root
    nothing is started: install.sh says what it would run on a live system."""
    root = tmp_path / "r"
    sock = root / "run/backtrack/control.sock"
    sock.parent.mkdir(parents=True)
    show = make_show(tmp_path / "show", [30.0, 30.0], pcm=jack_audio.pcm)
    text = show.config.read_text()
    show.config.write_text(text.replace(show.socket, str(sock)))
    show.socket = str(sock)
    unit = root / "etc/systemd/system/backtrack.service"

    def play() -> None:
        """From the top of song 1, well inside it (30 s) for what follows."""
        d.ctl("stop")
        d.ctl("play")
        wait_for(lambda: d.status()["state"] == "playing", what="playing")

    with DaemonProcess(show, jack_audio.environ()) as d:
        play()
        # a first install, everything new: the files go in, the restart is held back
        res = run_install("--root", str(root), root=root)
        assert res.returncode == 3, res.stdout + res.stderr
        assert 'not restarting the player: it is playing song 1/2 "Song 1" at 0:' \
            in res.stderr, res.stderr
        for hint in ("systemctl restart backtrack", "--force", "--wait"):
            assert hint in res.stderr, hint
        assert RESTART not in res.stdout
        assert unit.read_bytes() == (DEPLOY / "backtrack.service").read_bytes()
        assert "install done" in res.stdout and (root / "run/backtrack-restart-pending").exists()
        assert d.proc.poll() is None and d.status()["state"] == "playing"

        # nothing new, but the player still runs the old files: still owed, still held back
        res = run_install("--root", str(root), root=root)
        assert res.returncode == 3 and res.stdout.strip().endswith("0 change(s)"), res.stdout
        assert "not restarting the player" in res.stderr

        # paused holds a song too
        d.ctl("pause")
        wait_for(lambda: d.status()["state"] == "paused", what="paused")
        res = run_install("--root", str(root), root=root)
        assert res.returncode == 3 and "it is paused song 1/2" in res.stderr, res.stderr

        # --force restarts anyway
        play()
        res = run_install("--root", str(root), "--force", root=root)
        assert res.returncode == 0, res.stderr
        assert RESTART in res.stdout and not (root / "run/backtrack-restart-pending").exists()
        # and once restarted, a run with nothing new leaves the player alone
        res = run_install("--root", str(root), root=root)
        assert res.returncode == 0 and RESTART not in res.stdout, res.stdout + res.stderr

        # --wait: waits while the song plays, restarts once it is stopped (cued)
        unit.write_text("stale\n")
        play()
        proc = subprocess.Popen(install_cmd("--root", str(root), "--wait", root=root),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(4.0)
            assert proc.poll() is None, proc.communicate()
            assert d.status()["state"] == "playing"
            assert unit.read_bytes() == (DEPLOY / "backtrack.service").read_bytes()
            d.ctl("stop")
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out + err
        assert 'waiting for the song to end: playing song 1/2 "Song 1"' in out, out
        assert out.index("the player is cued") < out.index(RESTART), out

        # cued: a change is installed and the restart goes ahead at once
        assert d.status()["state"] == "cued"
        unit.write_text("stale\n")
        res = run_install("--root", str(root), root=root)
        assert res.returncode == 0 and RESTART in res.stdout, res.stdout + res.stderr
        assert d.proc.poll() is None  # (under --root nothing is restarted for real)

    # no player answering: nothing to hold back (on a live system: restart as before)
    unit.write_text("stale\n")
    res = run_install("--root", str(root), root=root)
    assert res.returncode == 0 and RESTART not in res.stdout, res.stdout + res.stderr
    assert "not restarting" not in res.stderr


class FakePlayer:
    """Answers {"cmd": "status"} on a Unix socket with whatever state it is set to."""

    def __init__(self, path: Path):
        self.state = "playing"
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                st = {"state": self.state, "song": 4, "songs": 12, "title": "Ballad",
                      "position_s": 83.2, "duration_s": 245.0, "setlist": "friday",
                      "role": "leader"}
                conn.sendall((json.dumps({"ok": True, "state": st}) + "\n").encode())

    def close(self) -> None:
        self.srv.close()


def root_with_player(tmp_path: Path) -> tuple[Path, FakePlayer]:
    """A target root whose config names a socket inside it, a stand-in player answering."""
    root = tmp_path / "r"
    (root / "etc/backtrack").mkdir(parents=True)
    (root / "etc/backtrack/config.yaml").write_text("control: {socket: /run/bt.sock}\n")
    (root / "run").mkdir()
    return root, FakePlayer(root / "run/bt.sock")


def test_live_restart_asks_the_player_first(tmp_path):
    """The live branch (no --root): install.sh sourced, its start step run against a
    stand-in systemctl that records what it is asked, and a stand-in player."""
    root, player = root_with_player(tmp_path)
    log = tmp_path / "systemctl.log"
    fake_tool(tmp_path / "bin/systemctl", log,
              'case "$*" in *InvocationID*) echo inv-1 ;; *StatusText*) echo "cued 1/12" ;; esac\n')
    pending = root / "run/backtrack-restart-pending"

    def start_units(*assign: str) -> tuple[list[str], subprocess.CompletedProcess]:
        log.write_text("")
        # ROOT points the config and the socket into tmp_path; the live branch (DO_START=1)
        # runs systemctl itself, here the stand-in
        script = (f'source "{INSTALL}"; ROOT="{root}"; DO_START=1; CHANGES=1; '
                  f'{"".join(a + "; " for a in assign)}start_units; echo "HELD=$HELD"')
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
        assert res.returncode == 0, res.stderr
        return [" ".join(c[1:]) for c in calls(log)], res

    try:
        ran, res = start_units()
        assert "start backtrack-cpufreq.service" in ran
        assert not any(c.startswith(("restart", "start backtrack.service")) for c in ran), ran
        assert 'HELD=playing song 4/12 "Ballad" at 1:23 of 4:05 (setlist friday)' in res.stdout
        assert pending.read_text().strip() == ""  # (under ROOT: no invocation id asked)

        player.state = "paused"
        ran, res = start_units()
        assert "restart backtrack.service" not in ran and "HELD=paused" in res.stdout

        ran, res = start_units("FORCE=1")
        assert "restart backtrack.service" in ran and "HELD=\n" in res.stdout
        assert not pending.exists()

        # cued: restarted; and a restart still owed from an earlier run, with nothing new
        player.state = "cued"
        pending.write_text("")
        ran, res = start_units("CHANGES=0")
        assert "restart backtrack.service" in ran, ran
        assert not pending.exists()
        # nothing new, nothing owed: the player is left alone (`start` on a running unit)
        ran, res = start_units("CHANGES=0")
        assert "restart backtrack.service" not in ran and "start backtrack.service" in ran
        # on a live system the mark carries the player's invocation id: a player restarted
        # since (by hand, by its watchdog) owes nothing (invocation() is skipped under ROOT,
        # so it is asked here as on a live system)
        live_id = "invocation() { systemctl show -p InvocationID --value backtrack.service; }"
        pending.write_text("inv-0\n")
        ran, res = start_units("CHANGES=0", live_id)
        assert "restart backtrack.service" not in ran and not pending.exists()
        pending.write_text("inv-1\n")
        ran, res = start_units("CHANGES=0", live_id)
        assert "restart backtrack.service" in ran and not pending.exists()
        # held back on a live system: the mark names the running player
        player.state = "playing"
        ran, res = start_units(live_id)
        assert "HELD=playing" in res.stdout and pending.read_text().strip() == "inv-1"
        pending.unlink()

        # the question cannot be asked (the probe itself fails): taken as "in a song"
        ran, res = start_units('probe() { [ "$1" != status ] || return 5; '
                               'python3 "$PROBE" "$@"; }')
        assert "restart backtrack.service" not in ran and "HELD=unknown" in res.stdout
        pending.unlink()

        # the player does not answer: restart as before
        player.close()
        (root / "run/bt.sock").unlink()
        ran, res = start_units()
        assert "restart backtrack.service" in ran, ran
    finally:
        player.close()


def test_install_force_and_wait_exclude_each_other():
    res = run_install("--force", "--wait")
    assert res.returncode != 0 and "choose one" in res.stderr


# --------------------------------------------------------------------------------------------
# network-online.target: only for a unit of a pair (a drop-in)

PAIR_DROPIN = "etc/systemd/system/backtrack.service.d/pair.conf"


def test_unit_starts_without_the_network_and_the_pair_drop_in_wants_it(tmp_path):
    o = unit_options(DEPLOY / "backtrack.service")
    assert not any("network-online" in v for k in ("After", "Wants", "Requires")
                   for v in o.get(k, []))
    drop = unit_options(DEPLOY / "systemd/backtrack-pair.conf")
    assert drop == {"Wants": ["network-online.target"], "After": ["network-online.target"]}
    # the unit with its drop-in passes verify (the drop-in is read: a bad line would show)
    units = tmp_path / "units"
    (units / "backtrack.service.d").mkdir(parents=True)
    (units / "backtrack.service").write_text(
        (DEPLOY / "backtrack.service").read_text().replace(
            "ExecStart=/opt/backtrack/venv/bin/backtrack", f"ExecStart={VENV_BACKTRACK}"))
    shutil.copy(DEPLOY / "backtrack-cpufreq.service", units)
    shutil.copy(DEPLOY / "systemd/backtrack-pair.conf", units / "backtrack.service.d/pair.conf")
    res = subprocess.run(["systemd-analyze", "verify", str(units / "backtrack.service")],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


PEER = """
peer:
  role: leader
  key_file: /etc/backtrack/peer.key
"""


def test_install_puts_the_pair_drop_in_only_with_a_peer_section(tmp_path):
    root = tmp_path / "img"
    assert run_install("--root", str(root), root=root).returncode == 0
    assert not (root / PAIR_DROPIN).exists()  # the starter config: a single box
    cfg = root / "etc/backtrack/config.yaml"
    single = cfg.read_text()
    cfg.write_text(single + PEER)
    res = run_install("--root", str(root), root=root)
    assert res.returncode == 0 and f"wrote /{PAIR_DROPIN}" in res.stdout, res.stdout
    assert (root / PAIR_DROPIN).read_bytes() == \
        (DEPLOY / "systemd/backtrack-pair.conf").read_bytes()
    assert run_install("--root", str(root), root=root).stdout.strip().endswith("0 change(s)")
    # the unit is no longer one of a pair: the drop-in goes
    cfg.write_text(single)
    res = run_install("--root", str(root), root=root)
    assert f"removed /{PAIR_DROPIN}" in res.stdout, res.stdout
    assert not (root / PAIR_DROPIN).parent.exists()
    # the flags decide over the config
    assert run_install("--root", str(root), "--pair", root=root).returncode == 0
    assert (root / PAIR_DROPIN).exists()
    cfg.write_text(single + PEER)
    assert run_install("--root", str(root), "--no-pair", root=root).returncode == 0
    assert not (root / PAIR_DROPIN).exists()
    # a config that cannot be read leaves it as it is, with a warning
    assert run_install("--root", str(root), "--pair", root=root).returncode == 0
    cfg.write_text("peer: [unclosed\n")
    res = run_install("--root", str(root), root=root)
    assert res.returncode == 0 and "cannot tell from the config" in res.stderr, res.stderr
    assert (root / PAIR_DROPIN).exists()
    # uninstall removes it with the unit
    assert run_install("--root", str(root), "--uninstall", root=root).returncode == 0
    assert not (root / PAIR_DROPIN).parent.exists()


# --------------------------------------------------------------------------------------------
# Pinned Python packages, and a wheelhouse for a box without network or compiler

CONSTRAINTS = DEPLOY / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"not an exact pin: {line!r}"
            out[canonicalize_name(name)] = version
    return out


def test_constraints_pin_every_runtime_dependency_and_no_test_tool():
    spec = importlib.util.spec_from_file_location("lock", DEPLOY / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pinned = pins()
    needed = {canonicalize_name(n) for n in lock.closure(lock.PROJECT)}
    assert needed <= set(pinned), f"not pinned (run `make lock`): {needed - set(pinned)}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        assert req.specifier.contains(pinned[canonicalize_name(req.name)], prereleases=True), \
            f"{req} is not met by the pin {pinned[canonicalize_name(req.name)]}"
    for test_only in project["optional-dependencies"]["test"]:
        name = canonicalize_name(Requirement(test_only).name)
        assert name not in pinned or name in needed, f"test tool {name} pinned for the box"
    assert canonicalize_name("backtrack-appliance") not in pinned


def fake_tool(path: Path, log: Path, body: str = "") -> None:
    """A stand-in program that writes its arguments (one a line, then a blank line) to log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0" "$@" "" >> "{log}"\n{body}exit 0\n')
    path.chmod(0o755)


def calls(log: Path) -> list[list[str]]:
    return [c.split("\n") for c in log.read_text().split("\n\n") if c.strip()]


def run_install_venv(tmp_path: Path, *assign: str) -> list[list[str]]:
    """install.sh's venv step (install.sh sourced: it only defines its functions), against
    a stand-in venv whose pip records how it is called."""
    log = tmp_path / "pip.log"
    opt = tmp_path / "opt"
    fake_tool(opt / "venv/bin/python", log)
    fake_tool(opt / "venv/bin/pip", log)
    # FORCE=1: the player is not asked (test_install_venv_waits_for_the_song_too asks it)
    script = (f'source "{INSTALL}"; OPT="{opt}"; FORCE=1; '
              f'{"".join(a + "; " for a in assign)}install_venv')
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "installed the backtrack package" in res.stdout and "constraints.txt" in res.stdout
    assert (opt / "venv/.backtrack-source").exists()
    return [c for c in calls(log) if c[0].endswith("/pip")]


def test_install_venv_installs_pinned_by_the_constraints(tmp_path):
    pip = run_install_venv(tmp_path)
    assert pip[0][1:] == ["install", "-q", "--upgrade", "pip"]
    assert pip[-1][1:] == ["install", "-q", "--upgrade", "-c", str(CONSTRAINTS), str(ROOT)]


def test_install_from_a_wheelhouse_uses_no_index(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pip = run_install_venv(tmp_path, f'FROM_WHEELHOUSE="{wheels}"')
    assert len(pip) == 1, pip  # no pip upgrade either: no network
    assert pip[0][1:] == ["install", "-q", "--upgrade", "-c", str(CONSTRAINTS), "--no-index",
                          "--find-links", str(wheels), str(ROOT)]
    res = run_install("--from-wheelhouse", str(tmp_path / "nowhere"))
    assert res.returncode != 0 and "is not a folder" in res.stderr


def test_wheelhouse_builds_the_pinned_set(tmp_path):
    """--wheelhouse makes a throwaway venv with python3 and runs its pip wheel on the pinned
    set (python3 here is a stand-in whose venv's pip records its arguments)."""
    log = tmp_path / "calls.log"
    bin_ = tmp_path / "bin"
    venv_body = ('if [ "$1" = -m ] && [ "$2" = venv ]; then\n'
                 f'  mkdir -p "$3/bin"; cp "{bin_}/pip" "$3/bin/pip"\n'
                 '  printf \'#!/bin/sh\\necho "3.11 on aarch64"\\n\' > "$3/bin/python"\n'
                 '  chmod +x "$3/bin/python"\nfi\n')
    fake_tool(bin_ / "pip", log)
    fake_tool(bin_ / "python3", log, venv_body)
    out = tmp_path / "wheels"
    res = subprocess.run([str(INSTALL), "--wheelhouse", str(out)], capture_output=True,
                         text=True, timeout=60,
                         env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    assert "building wheels for Python 3.11 on aarch64" in res.stdout
    assert "--from-wheelhouse" in res.stdout and out.is_dir()
    wheel = [c for c in calls(log) if c[0].endswith("/pip") and c[1] == "wheel"]
    assert len(wheel) == 1
    args = wheel[0][1:]
    assert args[:7] == ["wheel", "-q", "-w", str(out), "-c", str(CONSTRAINTS), "-r"]
    assert args[7] == str(CONSTRAINTS) and "wheel" in args[8:]
    assert any(a.startswith("setuptools") for a in args[8:])
    assert not (ROOT / "opt").exists()


def test_install_venv_waits_for_the_song_too(tmp_path):
    """While a song plays the venv is not upgraded either (the player imports some modules
    late and must not meet half-upgraded ones); once it is cued, it is."""
    root, player = root_with_player(tmp_path)
    log = tmp_path / "pip.log"
    opt = tmp_path / "opt"
    fake_tool(opt / "venv/bin/python", log)
    fake_tool(opt / "venv/bin/pip", log)

    def install_venv() -> subprocess.CompletedProcess:
        script = (f'source "{INSTALL}"; ROOT="{root}"; OPT="{opt}"; install_venv; '
                  'echo "VENV_HELD=$VENV_HELD HELD=$HELD"')
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)

    try:
        res = install_venv()
        assert res.returncode == 0, res.stderr
        assert "VENV_HELD=1 HELD=playing" in res.stdout
        assert not log.exists() and not (opt / "venv/.backtrack-source").exists()
        player.state = "cued"
        res = install_venv()
        assert "VENV_HELD=0" in res.stdout and "installed the backtrack package" in res.stdout
        assert any(c[0].endswith("/pip") for c in calls(log))
    finally:
        player.close()
