"""Safety rules of the page: no exposure without a login, upload limits with clear messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from ui.safety import (
    SafetyError,
    UploadLimits,
    check_exposure,
    check_upload,
    parse_auth,
    resolve_auth,
)

REPO = Path(__file__).resolve().parents[1]


def _clip(path: Path, n: int = 30, fps: int = 30, size=(64, 48)) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((size[1], size[0], 3), (i * 8) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_refuses_network_bind_without_auth(host):
    with pytest.raises(SafetyError, match="--auth"):
        check_exposure(host, share=False, auth=None)
    check_exposure(host, share=False, auth=("u", "p"))


def test_refuses_share_without_auth_allows_loopback():
    with pytest.raises(SafetyError, match="--share"):
        check_exposure("127.0.0.1", share=True, auth=None)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, share=False, auth=None)


def test_auth_parsing_and_env():
    assert parse_auth("alice:s3:cret") == ("alice", "s3:cret")
    assert parse_auth(None) is None and parse_auth("") is None
    for bad in ("alice", ":pw", "alice:"):
        with pytest.raises(SafetyError, match="user:password"):
            parse_auth(bad)
    assert resolve_auth(None, {"PLEURA_AUTH": "bob:pw"}) == ("bob", "pw")
    assert resolve_auth("c:d", {"PLEURA_AUTH": "bob:pw"}) == ("c", "d")
    assert resolve_auth(None, {}) is None


def test_cli_refuses_0000_without_auth_with_message():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "stream", "ui", "--results",
                          "tcp://127.0.0.1:9", "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 2
    assert "refusing to bind '0.0.0.0' without authentication" in out.stderr
    assert "Traceback" not in out.stderr


def test_upload_accepts_small_video(tmp_path):
    clip = _clip(tmp_path / "ok.mp4")
    assert check_upload(clip) == clip.resolve()


def test_upload_type_size_duration_limits(tmp_path):
    clip = _clip(tmp_path / "c.mp4", n=60, fps=30)  # 2 s
    with pytest.raises(SafetyError, match="lasts 2 s; the limit is 1 s"):
        check_upload(clip, UploadLimits(max_seconds=1.0))
    with pytest.raises(SafetyError, match="the limit is"):
        check_upload(clip, UploadLimits(max_bytes=100))
    with pytest.raises(SafetyError, match="60 frames; the limit is 10"):
        check_upload(clip, UploadLimits(max_frames=10))
    script = tmp_path / "evil.py"
    script.write_text("print(1)")
    with pytest.raises(SafetyError, match="file type .py is not accepted"):
        check_upload(script)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(SafetyError, match="could not be read as a video"):
        check_upload(fake)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SafetyError, match="is empty"):
        check_upload(empty)
    with pytest.raises(SafetyError, match="no clip given"):
        check_upload(None)
    with pytest.raises(SafetyError, match="not found"):
        check_upload(tmp_path / "missing.mp4")


def test_report_shows_refusal_as_message_not_traceback(tmp_path):
    from ui.app import PageConfig
    from ui.report import make_report

    cfg = PageConfig(results_addr="tcp://127.0.0.1:9")
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    status, *rest = make_report(str(bad), None, {}, cfg, tmp_path)
    assert status.startswith("**Not scored:**") and ".txt is not accepted" in status
    assert all(r is None for r in rest)
    status, *_ = make_report(None, None, {}, cfg, tmp_path)
    assert "upload a clip or pick a demo clip" in status


def test_live_endpoints_need_the_gradio_login(tmp_path):
    """A real page with --auth: the live frames are behind the same login as the page."""
    import httpx

    from stream.sockets import free_port
    from ui.app import PageConfig, Server

    port = free_port()
    server = Server(PageConfig(results_addr=f"tcp://127.0.0.1:{free_port()}", port=port,
                             auth=("alice", "s3cret"), demo_dir=tmp_path))
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.get("/pleura/state.json").status_code == 401
            assert c.get("/pleura/frame.jpg?wait=0").status_code == 401
            assert c.post("/login", data={"username": "alice",
                                          "password": "wrong"}).status_code >= 400
            assert c.get("/pleura/state.json").status_code == 401
            r = c.post("/login", data={"username": "alice", "password": "s3cret"})
            assert r.status_code == 200, r.text
            st = c.get("/pleura/state.json")
            assert st.status_code == 200 and st.json()["received"] == 0
    finally:
        server.close()
