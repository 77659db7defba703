"""`trainkit visdom`: a login that works, no network exposure without one, no cross-site writes.

Every test runs the real server (`python -m trainkit visdom`) on a loopback port
and talks to it over HTTP or a websocket with the headers a hostile page would send.
"""

from __future__ import annotations

import http.client
import json
import stat
from pathlib import Path

import pytest
import websocket
from conftest import assert_user_error, free_port, run_cli, start_visdom, stop, tiny_config, write_yaml

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
LOGIN = {"VISDOM_USERNAME": "me", "VISDOM_PASSWORD": "s3cret-pass"}


def request(port: int, method: str, path: str, body: str | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def text_event(env: str, win: str, content: str) -> str:
    return json.dumps({"eid": env, "win": win, "data": [{"content": content, "type": "text"}], "layout": {}})


def client(port: int, login: dict | None = None):
    import visdom

    login = login or {}
    make = visdom.Visdom
    return make(
        server="http://127.0.0.1",
        port=port,
        use_incoming_socket=False,
        raise_exceptions=True,
        username=login.get("VISDOM_USERNAME"),
        password=login.get("VISDOM_PASSWORD"),
    )


def train_into(tmp_path: Path, tiny_data: Path, port: int, env: str, login: dict):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        train={"epochs": 1, "log_every": 2},
        log={"visdom": {"enabled": True, "server": "http://127.0.0.1", "port": port, "env": env, "log_every": 2}},
    )
    return run_cli("train", "--config", str(write_yaml(tmp_path / "vis.yaml", cfg)), env=login)


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    envs = tmp_path_factory.mktemp("envs")
    proc, port = start_visdom(envs, env={**LOGIN, "HOME": str(home)})
    try:
        yield port, envs, home
    finally:
        stop(proc)


def test_with_a_login_nothing_is_served_or_stored_without_it(login_server):
    port, envs, home = login_server
    status, page = request(port, "GET", "/")
    assert status == 200 and "Visdom Login" in page and "vis_socket" not in page  # the login page, not the envs
    assert request(port, "GET", "/env/main")[0] in range(400, 500)
    status, _ = request(port, "POST", "/events", text_event("main", "intruder", "hello"))
    assert status in range(400, 500)
    assert not client(port, LOGIN).win_exists("intruder", env="main")
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/socket", timeout=10)
    try:
        first = ws.recv()
    except websocket.WebSocketConnectionClosedException:
        first = ""
    assert "register" not in first and not ws.connected  # closed at once: no "register" message, no envs
    # the cookie secret lives in the env path, readable by its owner only; visdom's ~/.visdom is untouched
    secret = envs / "COOKIE_SECRET"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text()) >= 32
    assert not (home / ".visdom").exists()


def test_training_with_the_login_plots_and_a_wrong_one_is_named(tmp_path, tiny_data, login_server):
    port, _, _ = login_server
    proc = train_into(tmp_path / "ok", tiny_data, port, "logged-in", LOGIN)
    assert proc.returncode == 0, proc.stderr
    assert "visdom" not in proc.stderr, proc.stderr
    assert client(port, LOGIN).win_exists("loss", env="logged-in")

    wrong = train_into(tmp_path / "wrong", tiny_data, port, "wrong", {**LOGIN, "VISDOM_PASSWORD": "guess"})
    assert wrong.returncode == 0, wrong.stderr
    lines = [ln for ln in wrong.stderr.splitlines() if "visdom" in ln]
    assert len(lines) == 1 and "refused the login" in lines[0] and "VISDOM_PASSWORD" in lines[0], wrong.stderr
    assert "no visdom server" not in wrong.stderr

    anonymous = train_into(tmp_path / "anon", tiny_data, port, "anon", {"VISDOM_USERNAME": None})
    assert anonymous.returncode == 0, anonymous.stderr
    assert "refused the request" in anonymous.stderr and "VISDOM_USERNAME" in anonymous.stderr
    assert not client(port, LOGIN).win_exists("loss", env="wrong")


def test_every_interface_needs_a_login_or_an_explicit_no_login(tmp_path):
    port = free_port()
    refused = run_cli("visdom", "--host", "0.0.0.0", "--port", str(port), "--env-path", str(tmp_path),
                      env={"VISDOM_USERNAME": None, "VISDOM_PASSWORD": None}, timeout=60)  # fmt: skip
    assert_user_error(refused, "--host 0.0.0.0", "VISDOM_USERNAME", "--login", "--no-login")
    half = run_cli("visdom", "--port", str(port), "--env-path", str(tmp_path),
                   env={"VISDOM_USERNAME": "me", "VISDOM_PASSWORD": None}, timeout=60)  # fmt: skip
    assert_user_error(half, "VISDOM_PASSWORD is not set")

    proc, port = start_visdom(tmp_path / "open", "--host", "0.0.0.0", "--no-login", env={"VISDOM_USERNAME": None})
    try:
        assert request(port, "GET", "/")[0] == 200
    finally:
        stop(proc)
    warning = proc.stderr.read() if proc.stderr else ""
    assert "anyone who can reach this port can read, change and delete every plot" in warning

    answers = f"{LOGIN['VISDOM_USERNAME']}\n{LOGIN['VISDOM_PASSWORD']}\n"  # --login asks for them
    proc, port = start_visdom(tmp_path / "guarded", "--host", "0.0.0.0", "--login", stdin=answers)
    try:
        assert "Visdom Login" in request(port, "GET", "/")[1]
        client(port, LOGIN).text("hello", win="prompted", env="main")
        assert client(port, LOGIN).win_exists("prompted", env="main")
    finally:
        stop(proc)


def test_cross_site_requests_are_refused_and_the_page_still_works(tmp_path):
    proc, port = start_visdom(tmp_path)
    try:
        own = f"http://127.0.0.1:{port}"
        plain = {"Content-Type": "text/plain"}  # what any page may send without a CORS preflight
        for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}, {"Origin": "null"}):
            status, body = request(port, "POST", "/events", text_event("main", "xss", HOSTILE), {**plain, **headers})
            assert status == 403 and "refused" in body, (headers, status, body)
        # DNS rebinding: evil.example resolving to 127.0.0.1 is same-origin with itself, but not a loopback name
        rebind = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        assert request(port, "POST", "/events", text_event("main", "xss", HOSTILE), {**plain, **rebind})[0] == 403
        assert request(port, "GET", "/", headers={"Host": f"evil.example:{port}"})[0] == 403
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(f"ws://127.0.0.1:{port}/socket", origin="http://evil.example", timeout=10)
        vis = client(port)
        assert not vis.win_exists("xss", env="main")
        assert not any(HOSTILE in p.read_text() for p in tmp_path.glob("*.json"))

        # the page itself (same origin) and trainkit's client (no Origin) keep working
        status, _ = request(
            port, "POST", "/events", text_event("main", "mine", "hello"), {"Origin": own, "Referer": own}
        )
        assert status == 200 and vis.win_exists("mine", env="main")
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/socket", origin=own, timeout=10)
        try:
            assert json.loads(ws.recv())["command"] == "register"
        finally:
            ws.close()
    finally:
        stop(proc)


def test_trainkit_text_windows_escape_html(tmp_path, tiny_data, visdom_server):
    env = "escaped"
    cfg = tiny_config(
        tiny_data,
        tmp_path / "run",
        train={"epochs": 1},
        log={"visdom": {"enabled": True, "server": "http://127.0.0.1", "port": visdom_server, "env": env}},
    )
    cfg["data"]["cache_dir"] = str(tmp_path / "<img src=x onerror=alert(1)>")  # a free string the config shows
    proc = run_cli("train", "--config", str(write_yaml(tmp_path / "x.yaml", cfg)))
    assert proc.returncode == 0, proc.stderr
    status, body = request(visdom_server, "POST", "/win_data", json.dumps({"eid": env, "win": "config"}))
    assert status == 200
    content = json.loads(body)["content"]
    assert "&lt;img src=x" in content and "<img" not in content


def test_port_0_prints_the_port_it_holds_and_a_port_in_use_is_one_line(tmp_path):
    import re
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "trainkit", "visdom", "--port", "0", "--env-path", str(tmp_path / "envs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+) ", line).group(1))
        assert port > 0, line
        deadline = time.monotonic() + 30
        while request(port, "GET", "/")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        taken = run_cli("visdom", "--port", str(port), "--env-path", str(tmp_path / "other"), timeout=60)
        assert_user_error(taken, f"visdom --port {port}: cannot listen on 127.0.0.1:{port}", "--port 0")
    finally:
        stop(proc)
