"""Scale-out on Ray Serve (issue #17): ``pleura serve``, the ray engine backend, the worker.

One local Ray instance (2 CPUs, no dashboard) for the module; ``pleura serve`` (a real process)
deploys 2 replicas of a contract-true dummy bundle on it. Then:

- the ray engine gives the local engine's outputs (max abs diff <= 1e-5), and a replica
  killed while it holds calls costs a bounded, counted retry, not a wrong or lost answer;
- one ``pleura worker --backend ray`` process scores 4 simulated 30-fps probes (ZeroMQ, one
  socket each); every result equals the local engine's on the same frame, every stream's
  running video score equals a local replay of the frames it scored (state stays in the
  worker), and killing a replica mid-stream loses no stream (bounded gap, counted);
- an unreachable cluster: the worker scores with its local engine and says so in RESULT
  ``backend`` and the heartbeat; without the fallback the engine refuses with a clear error.

Skipped (with the reason) only when ``ray`` is not installed (``pip install 'pleura[serve]'``).
Ray processes are stopped at teardown (``ray.shutdown``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

ray = pytest.importorskip("ray", reason="ray[serve] not installed (pip install 'pleura[serve]')")
pytest.importorskip("ray.serve", reason="ray[serve] not installed (pip install 'pleura[serve]')")

from engines import create_engine  # noqa: E402
from engines.backends.ray import (  # noqa: E402
    RayEngine,
    RemoteUnavailableError,
    keep_signal_handlers,
)
from engines.base import FrameOutput  # noqa: E402
from engines.preprocess import preprocess_frame, to_grey  # noqa: E402
from engines.serve import NAMESPACE, replica_actor_names  # noqa: E402
from engines.testing import make_dummy_bundle  # noqa: E402
from engines.uninorm import RunningUninorm  # noqa: E402
from stream.sources import decode_file  # noqa: E402
from stream.wire import Kind, Message, decode, encode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stream" / "demo" / "demo-convex.mp4"
PROBES = 4
FPS = 30.0
TOL = 1e-5


def _pleura(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream", *args]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray instance with ``pleura serve`` (2 replicas) deployed; shut down after."""
    tmp = tmp_path_factory.mktemp("serve")
    bundle = make_dummy_bundle(tmp / "bundle", seg=True, findings=True)
    with keep_signal_handlers():  # Ray's SIGTERM handler must not outlive this module
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING", _system_config={"enable_worker_prestart": False})
    address = ray.get_runtime_context().gcs_address
    try:
        proc = subprocess.run(_pleura("serve", "--bundle", str(bundle), "--replicas", "2",
                                      "--threads", "1", "--num-cpus", "0.5", "--max-batch", "16",
                                      "--batch-wait-ms", "2", "--address", address, "--detach"),
                              capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "2 replica(s)" in proc.stdout and address in proc.stdout, proc.stdout
        frames = [df.image for df in decode_file(DEMO, max_frames=48)]
        yield {"bundle": bundle, "address": address, "frames": frames, "tmp": tmp}
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _wait_replicas(n: int = 2, timeout: float = 60.0) -> list[str]:
    """Until Serve runs ``n`` healthy replicas again (it replaces a killed one)."""
    from ray import serve

    t_end = time.time() + timeout
    while time.time() < t_end:
        names = replica_actor_names()
        app = serve.status().applications.get("pleura")
        if len(names) >= n and app is not None and app.status == "RUNNING":
            return names
        time.sleep(0.5)
    raise AssertionError(f"Serve did not bring back {n} replicas in {timeout} s")


def _kill_one_replica() -> str:
    name = replica_actor_names()[0]
    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    return name


def _inputs(frames: list[np.ndarray], spec) -> np.ndarray:
    return np.stack([preprocess_frame(to_grey(f), spec)[0] for f in frames])


def _assert_same(a, b) -> float:
    diff = max(float(np.abs(a.probs - b.probs).max()), float(np.abs(a.theta1 - b.theta1).max()),
               float(np.abs(a.theta2 - b.theta2).max()),
               float(np.abs(a.findings - b.findings).max()))
    assert diff <= TOL, diff
    return diff


# --------------------------------------------------------------------------- the engine


def test_ray_engine_equals_local_and_retries_a_killed_replica(cluster):
    local = create_engine(cluster["bundle"], "onnxruntime", threads=1)
    spec, seg_spec = local.bundle.frame_spec, local.bundle.seg_spec
    x = _inputs(cluster["frames"][:16], spec)
    xs = np.stack([preprocess_frame(to_grey(f), seg_spec)[0] for f in cluster["frames"][:2]])
    engines_ = [create_engine(cluster["bundle"], "ray", address=cluster["address"],
                              fallback=False, retry_s=30.0, call_timeout_s=30.0)
                for _ in range(4)]
    try:
        eng = engines_[0]
        assert eng.mode == "remote" and eng.backend == "ray" and eng.device == "cpu"
        for b in (1, 3, 16):  # batches of different sizes, merged by serve.batch
            _assert_same(eng.frame(x[:b]), local.frame(x[:b]))
        seg = eng.segment(xs)
        assert np.abs(seg.probs - local.segment(xs).probs).max() <= TOL
        with pytest.raises(ValueError, match="preprocess_batch"):
            eng.frame(np.zeros((1, 3, 10, 10), np.float32))  # checked before it leaves
        # 4 single-frame callers at once: serve.batch merges their frames into engine runs
        want = local.frame(x[:4])
        answers: dict[int, list] = {i: [] for i in range(4)}

        def one_frame(i: int) -> None:
            for _ in range(15):
                answers[i].append(engines_[i].frame(x[i:i + 1]))

        callers = [threading.Thread(target=one_frame, args=(i,)) for i in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(60)
        for i, outs in answers.items():
            assert len(outs) == 15
            for out in outs:
                _assert_same(out, FrameOutput(want.probs[i:i + 1], want.theta1[i:i + 1],
                                              want.theta2[i:i + 1], want.findings[i:i + 1]))
        assert max(e.status()["merged_max"] for e in engines_) >= 2, \
            [e.status() for e in engines_]
        # 4 callers of a slow call (64 MC-dropout passes, ~1 s each here) keep both replicas
        # busy; one replica is killed while it holds calls: they are retried on the other
        # within retry_s, and every caller gets its answer
        got: dict[int, object] = {}

        def call(i: int) -> None:
            got[i] = engines_[i].segment(xs[:1], mc_samples=64)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.4)
        _kill_one_replica()
        for t in threads:
            t.join(90)
        assert len(got) == 4
        for out in got.values():
            assert out.probs.shape == (1, 5, 200, 260) and out.std is not None
            assert np.allclose(out.probs.sum(axis=1), 1.0, atol=1e-4)
        stats = [e.status() for e in engines_]
        assert sum(s["retries"] for s in stats) >= 1, stats  # the killed replica held calls
        assert all(s["gave_up"] == 0 and s["mode"] == "remote" for s in stats), stats
        assert 0 < max(s["gap_ms_max"] for s in stats) < 30_000, stats
        _assert_same(eng.frame(x), local.frame(x))  # and frames still flow, unchanged
    finally:
        for e in engines_:
            e.close()
        local.close()
    _wait_replicas(2)


def test_unreachable_application_falls_back_or_refuses(cluster):
    spec = create_engine(cluster["bundle"], "onnxruntime", threads=1)
    x = _inputs(cluster["frames"][:2], spec.bundle.frame_spec)
    eng = RayEngine(cluster["bundle"], app_name="not-deployed", threads=1, reconnect_s=60)
    try:
        assert eng.mode == "fallback"
        assert "unreachable -> local onnxruntime" in eng.describe()
        _assert_same(eng.frame(x), spec.frame(x))
        assert eng.status()["fallback_frames"] == 2
    finally:
        eng.close()
        spec.close()
    # the application appears later: the engine notices within reconnect_s and goes remote
    from engines.serve import ServeConfig, deploy

    late = RayEngine(cluster["bundle"], app_name="late", threads=1, reconnect_s=0.3)
    try:
        assert late.mode == "fallback"
        deploy(ServeConfig(bundle=str(cluster["bundle"]), replicas=1, num_cpus=0.25,
                           app_name="late"))
        t_end = time.time() + 30
        while late.mode != "remote" and time.time() < t_end:
            time.sleep(0.1)
        assert late.mode == "remote", late.status()
        _assert_same(late.frame(x), create_engine(cluster["bundle"], "onnxruntime").frame(x))
        assert late.status()["calls"] >= 1
    finally:
        late.close()
        from ray import serve

        serve.delete("late")
    with pytest.raises(RemoteUnavailableError, match="pleura serve --bundle"):
        RayEngine(cluster["bundle"], app_name="not-deployed", fallback=False)
    other = make_dummy_bundle(cluster["tmp"] / "other", seg=False, seed=7)
    with pytest.raises(ValueError, match="serves bundle"):
        RayEngine(other, address=cluster["address"])


def test_pleura_score_backend_ray_equals_the_local_engine(cluster, capsys):
    from stream.cli import main

    outs = {}
    for backend in ("ray", "onnxruntime"):
        out = cluster["tmp"] / f"score-{backend}.json"
        extra = ["--serve-address", cluster["address"]] if backend == "ray" else []
        rc = main(["score", str(DEMO), "--bundle", str(cluster["bundle"]), "--backend", backend,
                   "--threads", "1", "--max-frames", "24", "--json", str(out), *extra])
        assert rc == 0, capsys.readouterr().out
        import json

        outs[backend] = json.loads(out.read_text())
    assert outs["ray"]["model"]["backend"] == "ray"
    a, b = (np.array([f["probs"] for f in outs[k]["clips"][0]["frames"]])
            for k in ("ray", "onnxruntime"))
    assert a.shape == (24, 4) and np.abs(a - b).max() <= TOL
    assert outs["ray"]["clips"][0]["video"]["score"] == outs["onnxruntime"]["clips"][0]["video"][
        "score"]


# --------------------------------------------------------------------------- the worker


class Probes:
    """4 simulated probes at 30 fps (one ZeroMQ PUB each, as capture does) and the worker's
    results, collected on a thread."""

    def __init__(self, d: Path, frames: list[np.ndarray], n: int = PROBES) -> None:
        ctx = zmq.Context.instance()
        self.frames, self.n = frames, n
        self.addrs = [f"ipc://{d}/probe{i}.sock" for i in range(n)]
        self.results_addr, self.status_addr = f"ipc://{d}/results.sock", f"ipc://{d}/status.sock"
        self.pubs = []
        for a in self.addrs:
            s = ctx.socket(zmq.PUB)
            s.bind(a)
            self.pubs.append(s)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 100000)
        self.sub.connect(self.results_addr)
        self.status = ctx.socket(zmq.PULL)
        self.status.bind(self.status_addr)
        self.results: list[tuple[float, Message]] = []
        self.beats: list[dict] = []
        self.seq = 0
        self.sending = threading.Event()
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]
        for t in self._threads:
            t.start()

    def frame_of(self, sid: int, seq: int) -> np.ndarray:
        return self.frames[(seq + 11 * sid) % len(self.frames)]

    def _send(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            if self.sending.is_set():
                for sid, pub in enumerate(self.pubs):
                    m = Message(Kind.FRAME, sid, self.seq, array=self.frame_of(sid, self.seq),
                                meta={"source": f"probe-{sid}", "session": 1, "epoch": 0,
                                      "index": self.seq})
                    m.stamp("grabbed", time.time())
                    pub.send(encode(m))
                self.seq += 1
            t0 += 1.0 / FPS
            time.sleep(max(0.0, t0 - time.monotonic()))

    def _receive(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.status, zmq.POLLIN)
        while not self.stop.is_set():
            ready = dict(poller.poll(50))
            if self.sub in ready:
                m = decode(self.sub.recv())
                if m.kind == Kind.RESULT and not m.meta.get("resent") \
                        and not m.meta.get("status_only"):
                    self.results.append((time.monotonic(), m))
            if self.status in ready:
                meta = decode(self.status.recv()).meta
                if meta.get("role") == "worker":
                    self.beats.append(meta)

    def start_when_ready(self, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
        """Send frames once the worker is up and our results socket has joined (a result
        published before that would be lost, and the video-score replay could not match)."""
        self.wait_results(lambda: any(b.get("ready") for b in self.beats), timeout, proc, log)
        time.sleep(0.5)
        self.sending.set()

    def wait_results(self, pred, timeout: float, proc: subprocess.Popen, log: Path) -> None:
        t_end = time.time() + timeout
        while time.time() < t_end:
            assert proc.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out; worker log: {log.read_text()[-3000:]}")

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(5)
        for s in (*self.pubs, self.sub, self.status):
            s.close(0)


def _start_worker(probes: Probes, bundle: Path, log: Path, *extra: str) -> subprocess.Popen:
    args = ["worker", "--bundle", str(bundle), "--results", probes.results_addr,
            "--status", probes.status_addr, "--seg", "off", "--threads", "1", *extra]
    for a in probes.addrs:
        args += ["--frames", a]
    with open(log, "w") as err:
        return subprocess.Popen(_pleura(*args), stderr=err, cwd=ROOT)


def _stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM, as the supervisor stops a worker; its exit code (None: it had to be killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
    return proc.returncode


def _check_against_local(probes: Probes, bundle: Path) -> dict[int, list[int]]:
    """Every result's probabilities equal the local engine's on its frame, and every stream's
    running video score equals a local replay of the frames it scored. Returns seqs per stream."""
    local = create_engine(bundle, "onnxruntime", threads=1)
    spec, e = local.bundle.frame_spec, np.asarray(local.bundle.uninorm_e)
    by_sid: dict[int, list[Message]] = {}
    for _t, m in probes.results:
        by_sid.setdefault(m.stream_id, []).append(m)
    seqs = {}
    for sid, msgs in sorted(by_sid.items()):
        msgs.sort(key=lambda m: m.seq)
        x = _inputs([probes.frame_of(sid, m.seq) for m in msgs], spec)
        want = np.concatenate([local.frame(x[i:i + 64]).probs for i in range(0, len(x), 64)])
        got = np.array([m.meta["probs"] for m in msgs])
        assert np.abs(got - want).max() <= TOL, (sid, np.abs(got - want).max())
        running = RunningUninorm(e)
        for p in want.astype(np.float64):
            running.update(p)
        replay = np.array(running.log_value)
        last = np.array(msgs[-1].meta["video"]["log_aggregate"], dtype=np.float64)
        assert np.allclose(last, replay, rtol=1e-6, atol=1e-4), (sid, last, replay)
        assert msgs[-1].meta["video"]["n_frames"] == len(msgs)
        seqs[sid] = [m.seq for m in msgs]
    local.close()
    return seqs


def test_worker_scores_four_probes_on_serve_and_survives_a_killed_replica(cluster):
    _wait_replicas(2)
    d, log = cluster["tmp"] / "w4", cluster["tmp"] / "worker4.log"
    d.mkdir()
    probes = Probes(d, cluster["frames"])
    proc = _start_worker(probes, cluster["bundle"], log, "--backend", "ray",
                         "--serve-address", cluster["address"], "--seg", "lane",
                         "--seg-hz", "2")  # the segmentation lane's engine is remote too
    try:
        probes.start_when_ready(proc, log)
        probes.wait_results(lambda: {m.stream_id for _, m in probes.results} == set(range(4)),
                            120, proc, log)
        time.sleep(2.0)
        t_kill = time.monotonic()
        killed = _kill_one_replica()
        time.sleep(4.0)
        probes.sending.clear()
        time.sleep(1.0)
        beats = [b for b in probes.beats if isinstance(b.get("engine"), dict)]
    finally:
        rc = _stop(proc)
        probes.close()
    assert rc == 0, f"worker did not stop cleanly ({rc}): {log.read_text()[-2000:]}"
    assert beats, f"no heartbeat with the engine's state: {log.read_text()[-2000:]}"
    engine = beats[-1]["engine"]
    assert engine["mode"] == "remote" and engine["gave_up"] == 0, engine
    assert len(engine["replicas_seen"]) >= 2, engine  # both replicas served this worker
    results = probes.results
    assert all(m.meta["backend"].startswith("ray (") for _, m in results), results[-1][1].meta
    assert any(m.meta.get("mask_seq") is not None for _, m in results), "no mask came back"
    # no stream lost: every probe keeps getting results after the kill, with a bounded gap
    for sid in range(PROBES):
        times = [t for t, m in results if m.stream_id == sid]
        after = [t for t in times if t > t_kill]
        assert len(after) >= 30, (sid, len(after), killed)  # >= 1 s of 30 fps in 4 s
        gaps = np.diff([t for t in times if t > t_kill - 1.0])
        assert gaps.max() < 3.0, (sid, gaps.max(), engine)
    seqs = _check_against_local(probes, cluster["bundle"])
    # skipped frames (latest wins) are counted: a stream's last result says how many
    for sid, s in seqs.items():
        last = max((m for _, m in results if m.stream_id == sid), key=lambda m: m.seq)
        assert last.meta["skipped"] == (s[-1] - s[0] + 1) - len(s), (sid, last.meta["skipped"])


def test_worker_falls_back_to_its_local_engine_and_says_so(cluster):
    d, log = cluster["tmp"] / "wfb", cluster["tmp"] / "worker-fallback.log"
    d.mkdir()
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probes = Probes(d, cluster["frames"], n=1)
    proc = _start_worker(probes, cluster["bundle"], log, "--backend", "ray",
                         "--serve-address", f"127.0.0.1:{port}")
    try:
        probes.start_when_ready(proc, log)
        probes.wait_results(lambda: len(probes.results) >= 10, 60, proc, log)
        probes.sending.clear()
        time.sleep(1.2)  # a heartbeat after the last result
    finally:
        rc = _stop(proc)
        probes.close()
    assert rc == 0, f"worker did not stop cleanly ({rc}): {log.read_text()[-2000:]}"
    backend = probes.results[-1][1].meta["backend"]
    assert "ray unreachable -> local onnxruntime" in backend, backend
    engine = [b["engine"] for b in probes.beats if isinstance(b.get("engine"), dict)][-1]
    assert engine["mode"] == "fallback" and engine["fallback_frames"] >= 10, engine
    from stream.stats import RunStats  # what `pleura live --stats-json` reports

    stats = RunStats()
    for b in probes.beats:
        stats.on_heartbeat(b)
    assert [e["mode"] for e in stats.summary()["worker_engine"].values()] == ["fallback"]
    assert "no Ray head answers" in (engine["detail"] or ""), engine
    _check_against_local(probes, cluster["bundle"])
    assert os.path.exists(log)


def test_serve_config_and_the_serve_run_builder(tmp_path):
    from ray.serve import Application

    from engines.serve import ServeConfig, app_builder

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    assert isinstance(app_builder({"bundle": str(bundle), "replicas": "3",
                                   "num_gpus": "0.5"}), Application)
    gpu = ServeConfig(bundle=str(bundle), threads=2, num_gpus=0.5).actor_options()
    assert gpu["num_cpus"] == 2 and gpu["num_gpus"] == 0.5
    assert "num_gpus" not in ServeConfig(bundle=str(bundle)).actor_options()
    with pytest.raises(ValueError, match="may have"):
        app_builder({"bundle": str(bundle), "replica": "2"})
    with pytest.raises(ValueError, match="--replicas"):
        app_builder({"bundle": str(bundle), "replicas": "0"})
    with pytest.raises(ValueError, match="cannot use the ray backend"):
        ServeConfig(bundle=str(bundle), backend="ray")


def test_serve_bench_measures_and_tabulates(tmp_path):
    from benchmarks.serve_bench import format_table, measure

    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    engs = [create_engine(bundle, "onnxruntime", threads=1) for _ in range(2)]
    x = np.zeros((2, 3, 224, 224), np.float32)
    unpaced = measure([engs[0].frame], x, 0.3, paced=False)
    assert unpaced["batch"] == 2 and unpaced["latency_ms"]["n"] >= 1 and unpaced["fps"] > 0
    paced = measure([e.frame for e in engs], x[:1], 0.5, paced=True)  # 2 streams at 30 fps
    assert paced["callers"] == 2 and 0 < paced["fps"] <= 2 * 30 * 1.3, paced
    table = format_table({"bundle": "dummy", "streams": 2, "threads_per_engine": 1,
                          "ray": ray.__version__, "loadavg_start": [0], "loadavg_end": [0],
                          "rows": {"local/unpaced": unpaced, "local/paced": paced}})
    assert "local/paced" in table and "frames/s" in table
    for e in engs:
        e.close()


def test_without_ray_the_ray_backend_falls_back_and_says_how_to_install(tmp_path):
    bundle = make_dummy_bundle(tmp_path / "b", seg=False)
    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import numpy as np\n"
        "from engines import create_engine\n"
        f"e = create_engine({str(bundle)!r}, 'ray', threads=1)\n"
        "out = e.frame(np.zeros((1, 3, 224, 224), np.float32))\n"
        "print(e.mode, out.probs.shape, e.describe())\n"
        "e.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("fallback (1, 4)"), out.stdout
    assert "pip install 'pleura[serve]'" in out.stdout, out.stdout
