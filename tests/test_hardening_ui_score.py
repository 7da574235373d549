"""Issue #15, UI and offline scoring: no single request, message or file hangs or kills pleura.

Each test reproduces one attack or fault from docs/reliability.md. All network traffic stays on
127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from ui.bounds import BadParam, Gate, flag_param, float_param, int_param
from ui.browser_bench import free_port
from ui.results import ResultStore

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- HTTP parameters


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e308", "-1", "2.5", "abc", "",
                                 "0x10", "1" * 400])
def test_float_param_refuses_non_finite_and_out_of_range(raw):
    with pytest.raises(BadParam, match="wait=") as exc:
        float_param("wait", raw, 1.0, 0.0, 2.0)
    assert exc.value.status_code == 400 and "[0, 2]" in exc.value.detail


@pytest.mark.parametrize("raw", ["-3", "abc", "1e9", "1.5", "99999999999999999999999", "+-5",
                                 "\u00b2", ""])
def test_int_param_refuses_non_integers_and_out_of_range(raw):
    with pytest.raises(BadParam, match="after=") as exc:
        int_param("after", raw, 0, 0, 1000)
    assert exc.value.status_code == 400


def test_params_accept_good_values_and_defaults():
    assert float_param("wait", None, 1.0, 0.0, 2.0) == 1.0
    assert float_param("wait", "0.25", 1.0, 0.0, 2.0) == 0.25
    assert int_param("after", " 42 ", 0, 0, 1000) == 42 and int_param("after", None, 7, 0, 9) == 7
    assert flag_param("mask", "On", False) is True and flag_param("mask", None, True) is True
    with pytest.raises(BadParam, match="give 1 or 0"):
        flag_param("mask", "maybe", True)


def test_wait_newer_refuses_a_nan_deadline():
    store = ResultStore()
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="finite"):
            store.wait_newer(10**9, bad)
    t = time.monotonic()
    assert store.wait_newer(10**9, 0.05) is None
    assert time.monotonic() - t < 1.0


def test_gate_refuses_when_full_and_releases_once():
    gate = Gate("long-polls", 2)
    a, b = gate.enter(), gate.enter()
    with pytest.raises(Exception, match="too many long-polls") as exc:
        gate.enter()
    assert exc.value.status_code == 503
    a.release()
    a.release()  # idempotent: never frees a slot twice
    assert gate.busy == 1
    gate.enter()
    b.release()


# --------------------------------------------------------------------------- the real UI process

HOSTILE = (["/pleura/frame.jpg?after=1000000000&wait=nan"] * 40
           + ["/pleura/frame.jpg?after=1000000000&wait=inf",
              "/pleura/frame.jpg?after=-1&wait=1e308",
              "/pleura/frame.jpg?mask=%00%ff&unc=2",
              "/pleura/timeline.png?w=nan&h=1e9",
              "/pleura/live.mjpg?frames=-1"] * 4
           + ["/pleura/frame.jpg?after=1000000000&wait=2"] * 30
           + ["/pleura/timeline.png?w=2000&h=800"] * 5
           + ["/pleura/live.mjpg"] * 5)
"""100 requests: non-finite / out-of-range parameters, and more long-polls and streams than
the page admits."""


def _start_ui(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp),
           "HOME": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "ui", "--results", f"tcp://127.0.0.1:{free_port()}",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"UI exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(base + "/pleura/state.json", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise AssertionError("UI did not come up in 90 s")


def _hostile(client: httpx.Client, path: str) -> int | str:
    """One request, read for at most ~3 s; the status, or the exception's name."""
    try:
        with client.stream("GET", path) as r:  # a stream is left as soon as it answers
            return r.status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _state_seconds(base: str) -> float:
    t = time.monotonic()
    r = httpx.get(base + "/pleura/state.json", timeout=5)
    assert r.status_code == 200
    return time.monotonic() - t


def _cpu_seconds(pid: int, over: float) -> float:
    p = psutil.Process(pid)
    a = sum(p.cpu_times()[:2])
    time.sleep(over)
    return sum(p.cpu_times()[:2]) - a


def _upload(base: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(base + "/gradio_api/upload", files={"files": (name, data)}, timeout=10)


def _oversized_upload_status(base: str, claimed: int) -> bytes:
    """Announce a ``claimed``-byte upload and send none of it: the answer must come anyway."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/"
                  b"form-data; boundary=b\r\nContent-Length: " + str(claimed).encode()
                  + b"\r\n\r\n")
        return s.recv(200)


def test_ui_survives_100_hostile_requests_and_cleans_up_on_sigterm(tmp_path):
    """Before #15: one ``wait=nan`` spun a thread at 100 % CPU for ever; 40 of them made
    state.json and /config time out. Now each is a 400, excess long-polls and streams are
    503s, the page answers throughout, no thread spins afterwards, and SIGTERM ends it."""
    proc, base = _start_ui(tmp_path)
    try:
        limits = httpx.Limits(max_connections=len(HOSTILE) + 10)
        timeout = httpx.Timeout(3.0, connect=3.0)
        with httpx.Client(base_url=base, limits=limits, timeout=timeout) as client, \
                ThreadPoolExecutor(len(HOSTILE)) as pool:
            futures = [pool.submit(_hostile, client, p) for p in HOSTILE]
            time.sleep(0.3)
            during = [_state_seconds(base) for _ in range(5)]
            codes = [f.result(timeout=15) for f in futures]
        assert max(during) < 2.0, f"state.json took {max(during):.2f} s under load"
        assert _upload(base, "junk.bin", b"\x00" * 1000).status_code == 415
        assert _upload(base, "junk.mp4", os.urandom(1 << 20)).status_code == 200
        assert _oversized_upload_status(base, 300 * 2**20).startswith(b"HTTP/1.1 413")
        for i, path in enumerate(HOSTILE):
            bad = "nan" in path or "inf" in path or "=-1" in path or "%00" in path
            want = {400} if bad else {200, 204, 503}
            assert codes[i] in want, f"{path}: {codes[i]}"
        assert codes.count(503) > 0  # more than the gates admit
        assert _cpu_seconds(proc.pid, 2.0) < 0.6  # nothing left spinning
        with httpx.Client(base_url=base, timeout=timeout) as client:  # slots came back
            assert _hostile(client, "/pleura/live.mjpg") == 200
            assert client.get("/pleura/frame.jpg?after=0&wait=0.1").status_code == 204
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the UI ignored SIGTERM for 20 s") from None
    assert rc in (0, -signal.SIGTERM)
    left = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert not left, f"uploads left behind after exit: {left}"
