"""Reproduce the worker / capture / bundle faults of issue #15 and print what happened.

Usage:
    python scripts/hardening_probe.py oversize          # 4 MiB meta fields in FRAME / HEARTBEAT
    python scripts/hardening_probe.py streams --n 600   # worker RSS after N distinct stream ids
    python scripts/hardening_probe.py sigterm           # capture on a dead rtsp:// URL, SIGTERM
    python scripts/hardening_probe.py bundle            # manifest naming ../x and /etc/passwd
    python scripts/hardening_probe.py reset             # CONTROL reset with stream_id "x"
    python scripts/hardening_probe.py restart           # live run stats across a capture kill

``--repo DIR`` runs another checkout's code (e.g. ``git archive HEAD | tar -x -C /tmp/old``),
which is how docs/reliability.md's "before" column was measured. Everything runs on loopback
(ipc:// sockets in a temporary folder) with the engines' tiny dummy bundle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(repo: Path, d: Path, bundle: Path, *extra: str):
    import zmq

    a = {k: f"ipc://{d}/{k}.sock" for k in ("frames", "results", "status", "ctl")}
    ctx = zmq.Context.instance()
    status = ctx.socket(zmq.PULL)
    status.bind(a["status"])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(a["results"])
    pub = ctx.socket(zmq.PUB)
    pub.bind(a["frames"])
    ctl = ctx.socket(zmq.PUB)
    ctl.connect(a["ctl"])
    err = open(d / "worker.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--frames", a["frames"],
                             "--results", a["results"], "--status", a["status"], "--control",
                             a["ctl"], "--bundle", str(bundle), "--seg", "off", *extra],
                            cwd=repo, stderr=err)
    t_end = time.time() + 60
    while not status.poll(200):
        if time.time() > t_end or proc.poll() is not None:
            raise SystemExit("the worker did not start")
    time.sleep(0.5)  # the SUB sockets connect
    return proc, pub, sub, ctl, status


def _frame(sid: int, seq: int, img, **meta):
    from stream.wire import Kind, Message, encode

    m = Message(Kind.FRAME, sid, seq, meta={"source": "probe", "session": 1, "epoch": 0, **meta},
                array=img)
    m.stamp("grabbed", time.time())
    m.stamp("sent", time.time())
    return encode(m)


def _result(sub, sid: int, timeout: float = 5.0):
    from stream.wire import decode

    t_end = time.time() + timeout
    while time.time() < t_end:
        if sub.poll(100):
            m = decode(sub.recv())
            if m.stream_id == sid:
                return m
    return None


def oversize(repo: Path, d: Path, bundle: Path) -> dict:
    import numpy as np

    from stream.wire import Kind, Message, encode

    img = np.zeros((120, 160), np.uint8)
    out = {}
    proc, pub, sub, *_ = _worker(repo, d, bundle)
    pub.send(_frame(0, 0, img, source="s" * ((4 << 20) - 300)))
    time.sleep(2.0)
    out["frame_4MiB_source"] = "alive" if proc.poll() is None else f"exit {proc.returncode}"
    if proc.poll() is None:
        pub.send(_frame(1, 0, img))
        out["valid_frame_after"] = _result(sub, 1) is not None
        pub.send(encode(Message(Kind.HEARTBEAT, 1, 1, meta={"state": "x" * ((4 << 20) - 64)})))
        time.sleep(2.0)
        out["heartbeat_4MiB_state"] = "alive" if proc.poll() is None else \
            f"exit {proc.returncode}"
    proc.kill()
    tail = (d / "worker.log").read_text().strip().splitlines()[-1:]
    out["last_log_line"] = tail[0][:160] if tail else ""
    return out


def streams(repo: Path, d: Path, bundle: Path, n: int) -> dict:
    import numpy as np
    import psutil

    img = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    proc, pub, sub, *_ = _worker(repo, d, bundle)
    p = psutil.Process(proc.pid)
    pub.send(_frame(0, 0, img))
    _result(sub, 0)
    rss0 = p.memory_info().rss / 2**20
    lost = 0
    for sid in range(n):
        pub.send(_frame(sid, 1, img))
        lost += _result(sub, sid) is None
    rss1 = p.memory_info().rss / 2**20
    proc.kill()
    return {"streams": n, "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1),
            "no_result": lost}


def sigterm(repo: Path, d: Path) -> dict:
    import zmq

    from stream.wire import Kind, decode

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once this block ends: nothing listens there
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    frames = f"ipc://{d}/cap.sock"
    sub.connect(frames)
    cap = subprocess.Popen([sys.executable, "-m", "stream", "capture", "--source",
                            f"rtsp://127.0.0.1:{port}/live", "--frames", frames], cwd=repo)
    states, t_end = [], time.time() + 6.0
    while time.time() < t_end:
        if sub.poll(100):
            m = decode(sub.recv())
            if m.kind == Kind.HEARTBEAT:
                states.append(m.meta.get("state"))
    t0 = time.time()
    cap.send_signal(signal.SIGTERM)
    try:
        cap.wait(15)
        how = f"exit {cap.returncode} after {time.time() - t0:.2f} s"
    except subprocess.TimeoutExpired:
        cap.kill()
        cap.wait()
        how = "still running 15 s after SIGTERM (SIGKILL needed)"
    return {"states_seen_in_6s": states, "sigterm": how}


def bundle_names(repo: Path, d: Path, bundle: Path) -> dict:
    from engines.bundle import sha256_file

    out = {}
    other = d / "cnn-sord"
    shutil.copytree(bundle, other)
    clip = d / "clip"
    clip.mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(clip / "0.png"), np.zeros((120, 160), np.uint8))
    garbage = d / "garbage.onnx"
    garbage.write_text("not an ONNX model\n")
    for label, name, target in (("parent", "../cnn-sord/frame.onnx", other / "frame.onnx"),
                                ("absolute", "/etc/passwd", Path("/etc/passwd")),
                                ("garbage", "frame.onnx", garbage)):
        b = d / f"b-{label}"
        shutil.copytree(bundle, b)
        if label == "garbage":  # inside the bundle, hash recorded: only ONNX Runtime objects
            shutil.copy(garbage, b / name)
        man = json.loads((b / "manifest.json").read_text())
        man["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
        man["models"]["frame"]["file"] = man["models"]["frame"]["cpu_default"] = name
        (b / "manifest.json").write_text(json.dumps(man))
        r = subprocess.run([sys.executable, "-m", "stream", "score", str(clip), "--bundle",
                            str(b)], cwd=repo, capture_output=True, text=True, timeout=120)
        said = [ln for ln in (r.stdout + r.stderr).splitlines()
                if "pleura score:" in ln or "Error" in ln]
        out[f"{label}: {name}"] = {"rc": r.returncode, "traceback": "Traceback" in r.stderr,
                     "message": said[-1][:240] if said else ""}
    return out


def reset(repo: Path, d: Path, bundle: Path) -> dict:
    import numpy as np

    from stream.wire import Kind, Message, encode

    img = np.zeros((120, 160), np.uint8)
    proc, pub, sub, ctl, _ = _worker(repo, d, bundle)
    for seq in range(3):
        for sid in (0, 1):
            pub.send(_frame(sid, seq, img))
            _result(sub, sid)
    ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "reset", "stream_id": "x"})))
    time.sleep(0.3)
    n = {}
    for sid in (0, 1):
        pub.send(_frame(sid, 3, img))
        r = _result(sub, sid)
        n[sid] = r.meta["video"]["n_frames"] if r else None
    for _ in range(500):
        ctl.send(encode(Message(Kind.CONTROL, meta={"cmd": "reset", "stream_id": 0})))
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    log = (d / "worker.log").read_text()
    return {"n_frames_after_reset_x": n, "reset_log_lines_for_500_resets":
            sum("reset" in line for line in log.splitlines())}


def restart(repo: Path, d: Path, bundle: Path, seconds: float = 14.0) -> dict:
    import psutil

    clip = repo / "stream" / "demo" / "demo-linear.mp4"
    stats = d / "stats.json"
    sup = subprocess.Popen([sys.executable, "-m", "stream", "live", "--headless", "--source",
                            str(clip), "--loop", "--bundle", str(bundle), "--seg", "off",
                            "--seconds", str(seconds), "--stats-json", str(stats)], cwd=repo,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(seconds / 2)
    for c in psutil.Process(sup.pid).children(recursive=True):
        if " capture " in " ".join(c.cmdline()):
            c.kill()  # the supervisor restarts it
    out, _ = sup.communicate(timeout=seconds + 60)
    f = json.loads(stats.read_text())["frames"]
    return {"summary_line": out.strip().splitlines()[-1], "frames": f}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("oversize", "streams", "sigterm", "bundle", "reset",
                                        "restart"))
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose code runs")
    p.add_argument("--n", type=int, default=600, help="streams: distinct stream ids")
    args = p.parse_args(argv)
    repo = args.repo.resolve()
    from engines.testing import make_dummy_bundle

    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        d = Path(tmp)
        bundle = make_dummy_bundle(d / "bundle", seg=False)
        if args.what == "oversize":
            out = oversize(repo, d, bundle)
        elif args.what == "streams":
            out = streams(repo, d, bundle, args.n)
        elif args.what == "sigterm":
            out = sigterm(repo, d)
        elif args.what == "bundle":
            out = bundle_names(repo, d, bundle)
        elif args.what == "reset":
            out = reset(repo, d, bundle)
        else:
            out = restart(repo, d, bundle)
    print(json.dumps({"probe": args.what, "repo": str(repo), **out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
