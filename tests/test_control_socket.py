"""The control socket against hostile and careless clients, and `backtrack ctl`.

The socket server is tested with a real Unix socket and a recording handler (the transport
behind it is tested elsewhere); the end-to-end path through a daemon is in
test_playback.py and test_ctl_cli below.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from appliance.actions import request_action
from appliance.controls.socket import MAX_CLIENTS, MAX_LINE, ControlServer
from tests.showkit import DaemonProcess, make_show


@pytest.fixture
def server(tmp_path):
    seen = []

    def handler(req):
        seen.append(req)
        if req["cmd"] == "boom":
            raise RuntimeError("handler bug")
        return {"ok": True, "echo": req["cmd"]}

    srv = ControlServer(str(tmp_path / "c.sock"), handler)
    srv.start()
    srv.seen = seen
    yield srv
    srv.close()


def connect(path) -> socket.socket:
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(path)
            return s
        except BlockingIOError:  # listen backlog full for a moment
            s.close()
            time.sleep(0.01)
    raise AssertionError("could not connect")


def lines(s: socket.socket, n: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(x) for x in buf.splitlines()]


def test_socket_mode_is_0660(server):
    import os
    import stat

    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660


def test_garbage_gets_errors_and_the_connection_stays_up(server):
    s = connect(server.path)
    s.sendall(b'not json\n[1,2]\n{"nocmd": 1}\n{"cmd": 5}\n\xff\xfe\n{"cmd": "boom"}\n'
              b'{"cmd": "play"}\n')
    replies = lines(s, 7)
    assert [r["ok"] for r in replies] == [False] * 6 + [True]
    assert "malformed JSON" in replies[0]["error"]
    assert "JSON object" in replies[1]["error"]
    assert "cmd" in replies[2]["error"] and "cmd" in replies[3]["error"]
    assert "malformed JSON" in replies[4]["error"]
    assert "internal error" in replies[5]["error"]
    assert replies[6]["echo"] == "play"
    s.close()


def test_huge_line_is_refused_and_what_follows_still_works(server):
    s = connect(server.path)
    s.sendall(b"x" * (MAX_LINE * 3) + b'\n{"cmd": "next"}\n')
    replies = lines(s, 2)
    assert replies[0]["ok"] is False and "longer" in replies[0]["error"]
    assert replies[1] == {"ok": True, "echo": "next"}
    assert all(r["cmd"] != "x" for r in server.seen)


def test_many_clients(server):
    socks = [connect(server.path) for _ in range(MAX_CLIENTS + 5)]
    time.sleep(0.3)
    refused = 0
    for s in socks[MAX_CLIENTS:]:
        r = lines(s, 1)
        refused += bool(r and r[0]["error"] == "too many clients")
    assert refused == 5
    for s in socks[MAX_CLIENTS:]:
        s.close()
    # the accepted ones are all served
    for s in socks[:MAX_CLIENTS]:
        s.sendall(b'{"cmd": "status"}\n')
    assert all(lines(s, 1)[0]["ok"] for s in socks[:MAX_CLIENTS])
    for s in socks[:MAX_CLIENTS]:
        s.close()
    # and once they are gone, new clients get in
    time.sleep(0.3)
    s = connect(server.path)
    s.sendall(b'{"cmd": "play"}\n')
    assert lines(s, 1)[0]["ok"]


def test_client_that_vanishes_mid_line_does_not_hurt(server):
    s = connect(server.path)
    s.sendall(b'{"cmd": "pl')
    s.close()
    s = connect(server.path)
    s.sendall(b'{"cmd": "play"}\n')
    assert lines(s, 1)[0]["ok"]


def test_second_daemon_on_the_same_socket_is_refused(server):
    with pytest.raises(OSError, match="already listening"):
        ControlServer(server.path, lambda r: r)


def test_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # a daemon that died leaves the file behind
    srv = ControlServer(str(path), lambda r: {"ok": True})
    srv.start()
    try:
        c = connect(str(path))
        c.sendall(b'{"cmd": "status"}\n')
        assert lines(c, 1)[0]["ok"]
    finally:
        srv.close()


@pytest.mark.parametrize("req,expect", [
    ({"cmd": "goto 3"}, "goto 3"),
    ({"cmd": "goto", "song": 2}, "goto 2"),
    ({"cmd": "play_stop"}, "play_stop"),
    ({"cmd": "goto", "song": "Two"}, "goto Two"),  # a title: the daemon resolves it
    ({"cmd": "goto x"}, "goto x"),
    ({"cmd": "goto", "song": ""}, None),
    ({"cmd": "goto", "song": 2.5}, None),
    ({"cmd": "goto"}, None),
    ({"cmd": "rewind"}, None),
])
def test_request_action(req, expect):
    action, err = request_action(req)
    assert (str(action) if action else None) == expect
    assert bool(err) == (expect is None)


def run_ctl(sock, *words):
    return subprocess.run([sys.executable, "-m", "appliance", "ctl", "--socket", sock, *words],
                          capture_output=True, text=True, timeout=30)


def test_ctl_cli_against_a_daemon(jack_audio, tmp_path):
    show = make_show(tmp_path, [4.0, 4.0])
    with DaemonProcess(show, jack_audio.environ()):
        r = run_ctl(show.socket, "play")
        assert r.returncode == 0 and "1/2" in r.stdout and "playing" in r.stdout
        r = run_ctl(show.socket, "status", "--json")
        st = json.loads(r.stdout)["state"]
        for key in ("state", "song", "song_index", "title", "position_s", "position_frames",
                    "xruns", "role", "peer"):
            assert key in st
        r = run_ctl(show.socket, "goto", "7")
        assert r.returncode == 1 and "no song 7" in r.stderr and "Traceback" not in r.stderr
        r = run_ctl(show.socket, "next")
        assert r.returncode == 0 and "2/2" in r.stdout
        # the live line: non-tty output prints a line a second
        r = subprocess.run([sys.executable, "-c",
                            "from appliance.ctl import Client, watch_status;"
                            f"watch_status(Client({show.socket!r}), seconds=1.5)"],
                           capture_output=True, text=True, timeout=30)
        assert "2/2" in r.stdout and "[" in r.stdout and "xruns 0" in r.stdout
    r = run_ctl(show.socket, "status")
    assert r.returncode == 1 and "no daemon" in r.stderr and "Traceback" not in r.stderr
