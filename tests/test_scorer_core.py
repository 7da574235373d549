"""The one scoring core (issue #16): every path scores a frame with :mod:`engines.scorer`.

The live worker (the :class:`stream.workercore.Worker` driven with real wire messages, as its
loop drives it), ``pleura score`` (the CLI, its JSON file) and the report tab (``make_report``
as the button calls it, its JSON file) score the same demo clip on ONNX Runtime; per frame their
probabilities, crop boxes and running video score agree with each other and with the core's
stages run directly, to 1e-6. Twice: with the shipped default bundle (a whole-frame model: its
θ are the identity, so the worker sends no boxes and the others the whole letterboxed input)
and with a dummy bundle whose Reg-STN crops move (random fixed weights). Nothing is mocked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import engines
from engines.scorer import (
    DEFAULT_E,
    RunningScore,
    load_scorer,
    prepare_batch,
    prepare_frame,
    score_batch,
)
from stream.sources import decode_file

DEMO = Path(__file__).resolve().parents[1] / "stream" / "demo" / "demo-convex.mp4"
N = 300  # the whole clip (the report tab refuses clips longer than its frame limit)
TOL = 1e-6


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    out = [df.image for df in decode_file(DEMO)]
    assert len(out) == N
    return out


@pytest.fixture(scope="module", params=["default", "dummy"])
def bundle(request, tmp_path_factory) -> Path:
    if request.param == "default":
        return engines.default_bundle_path()
    from engines.testing import make_dummy_bundle

    return make_dummy_bundle(tmp_path_factory.mktemp("core") / "dummy", seg=False,
                             findings=True)


def _core_rows(images, bundle) -> list[dict]:
    """The reference: the core's stages called directly, one clip state, batches of 7."""
    scorer = load_scorer(bundle, backend="onnxruntime", threads=1)
    running = scorer.running()
    rows = []
    try:
        for k in range(0, len(images), 7):
            x, lbs = prepare_batch(images[k:k + 7], scorer.spec)
            _out, scored = score_batch(scorer, x, lbs, [running] * len(lbs))
            for fs in scored:
                assert not isinstance(fs, Exception), fs
                # boxes to 0.01 px: the precision the RESULT and the JSON files carry
                rows.append({"probs": fs.probs, "boxes": np.round(fs.boxes, 2), "score": fs.score,
                             "video_score": fs.video_score, "video_probs": fs.video_probs,
                             "whole": fs.whole_frame})
    finally:
        scorer.close()
    return rows


def _worker_rows(images, bundle) -> list[dict]:
    from stream.wire import decode
    from stream.workercore import Worker, WorkerConfig
    from tests.test_worker_results import _frame_msg

    w = Worker(WorkerConfig(frames_addrs=(), results_addr="",
                            bundle=str(bundle), backend="onnxruntime",
                            threads=1, seg="off"))
    rows = []
    try:
        for seq, img in enumerate(images):
            for res, st in w.process([_frame_msg(1, seq, img)]):
                m = decode(w.finish(res, st)).meta
                assert m["frame_hw"] == list(img.shape[:2])  # display scale 1: source pixels
                rows.append({"probs": m["probs"], "boxes": m["boxes"], "score": m["score"],
                             "video_score": m["video"]["score"],
                             "video_probs": m["video"]["probs"],
                             "whole": m["crops"]["whole_frame"]})
    finally:
        w.close()
    return rows


def _score_rows(tmp_path: Path, bundle) -> list[dict]:
    from stream import cli

    out = tmp_path / "score.json"
    rc = cli.main(["score", str(DEMO), "--bundle", str(bundle), "--backend", "onnxruntime",
                   "--threads", "1", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())["clips"][0]["frames"]


def _report_rows(tmp_path: Path, bundle) -> list[dict]:
    from ui.report import make_report
    from ui.safety import UploadLimits

    cfg = SimpleNamespace(bundle=str(bundle), backend="onnxruntime",
                          limits=UploadLimits(), report_dir=tmp_path)
    status, _summary, _timeline, strip, files = make_report(str(DEMO), None, {}, cfg, tmp_path)
    assert status.startswith("Scored"), status
    assert 1 <= len(strip) <= 8
    return json.loads(Path(files[0]).read_text())["frames"]


def _max_diff(a: list[dict], b: list[dict], key: str) -> float:
    """Largest absolute difference of ``key`` over paired rows (0 for no rows)."""
    return float(max((np.max(np.abs(np.asarray(x[key], np.float64) -
                                     np.asarray(y[key], np.float64)))
                      for x, y in zip(a, b, strict=True)), default=0.0))


def test_worker_score_and_report_agree_through_the_one_core(images, bundle, tmp_path):
    core = _core_rows(images, bundle)
    worker = _worker_rows(images, bundle)
    paths = {"worker": worker, "pleura score": _score_rows(tmp_path, bundle),
             "report tab": _report_rows(tmp_path / "report", bundle)}
    assert len(core) == N
    # a whole-frame model's worker results carry no boxes (nothing to draw), the others all
    assert [r["whole"] for r in worker] == [r["whole"] for r in core]
    whole = [r["whole"] for r in core]
    boxed = [i for i, w in enumerate(whole) if not w]
    assert all(worker[i]["boxes"] == [] for i, w in enumerate(whole) if w)
    for name, rows in paths.items():
        assert len(rows) == N, name
        for key in ("probs", "video_probs"):
            assert _max_diff(rows, core, key) <= TOL, (name, key)
        with_boxes = boxed if name == "worker" else range(N)
        assert _max_diff([rows[i] for i in with_boxes], [core[i] for i in with_boxes],
                         "boxes") <= TOL, name
        assert [r["score"] for r in rows] == [r["score"] for r in core], name
        assert [r["video_score"] for r in rows] == [r["video_score"] for r in core], name
    # not trivial: the running video probabilities move; the dummy's crops move too
    assert len({tuple(np.round(r["video_probs"], 6)) for r in core}) > 1
    if bundle.name == "dummy":
        assert len(boxed) == N and np.ptp([np.mean(core[i]["boxes"]) for i in boxed]) > 0


def test_prepare_frame_accepts_any_frame_and_refuses_non_images(images):
    spec = engines.load_bundle(engines.default_bundle_path()).frame_spec
    rgb = prepare_frame(images[0], spec)
    grey = prepare_frame(rgb.grey, spec)
    assert rgb.grey.shape == images[0].shape[:2] and rgb.x.shape == (3, 224, 224)
    np.testing.assert_array_equal(rgb.x, grey.x)
    with pytest.raises(ValueError, match="expected a frame of shape"):
        prepare_frame(np.zeros((4, 4, 2), np.uint8), spec)


def test_running_score_refuses_a_bad_frame_and_changes_nothing():
    r = RunningScore(DEFAULT_E, ("b_lines", "effusion"))
    r.update(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.9, 0.1]))
    before = (r.agg.log_value.copy(), list(r.frame_counts), r.findings.mean.copy())
    for probs, found in (([np.nan, 0.2, 0.3, 0.5], [0.5, 0.5]),  # non-finite probabilities
                         ([0.1, 0.2, 0.3, 0.4], [0.5, np.nan]),  # non-finite findings
                         ([0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5]),  # wrong size
                         ([0.5, 0.5], [0.5, 0.5])):
        with pytest.raises(ValueError):
            r.update(np.array(probs), np.array(found))
    assert r.n_frames == 1 and r.findings.n_frames == 1
    np.testing.assert_array_equal(r.agg.log_value, before[0])
    assert r.frame_counts == before[1] == [0, 0, 0, 1]
    np.testing.assert_array_equal(r.findings.mean, before[2])
    r.reset()
    assert r.n_frames == 0 and r.frame_counts == [0, 0, 0, 0] and r.findings.n_frames == 0
    # a stream whose very first frame is bad does not start a findings summary either
    fresh = RunningScore(DEFAULT_E, ("b_lines", "effusion"))
    with pytest.raises(ValueError):
        fresh.update(np.array([np.nan, 0.2, 0.3, 0.5]), np.array([0.5, 0.5]))
    assert fresh.findings is None and fresh.n_frames == 0


def test_strip_frames_stay_bounded_and_spread_over_the_clip():
    from ui.scoring import StripFrames

    strip = StripFrames(8)
    most = 0
    for i in range(1000):
        strip.add(i, SimpleNamespace(image=np.full((4, 4), i % 256, np.uint8), pts_s=i / 25))
        most = max(most, len(strip.frames))
    assert most <= 2 * 8 + 1 and len(strip.times) == 1000
    wanted = [0, 142, 285, 428, 571, 714, 857, 999]
    got = strip.pick(wanted, scored=set(range(1000)))
    assert len(got) == 8
    assert all(min(abs(j - t) for j in got) <= strip.stride for t in wanted)
    assert strip.pick(wanted, scored=set()) == {}


def test_report_scorer_cache_is_bounded_and_closes_what_it_drops(tmp_path):
    from engines.testing import make_dummy_bundle
    from ui.scoring import ScorerCache

    cache = ScorerCache(max_items=1)
    a, b = (str(make_dummy_bundle(tmp_path / n, seg=False)) for n in ("a", "b"))
    closed = []
    with cache.use(a, "onnxruntime") as (first, crops):
        assert crops["whole_frame"] is False
        real_close = first.engine.close  # watch the real engine being closed
        first.engine.close = lambda: (closed.append("a"), real_close())
    with cache.use(b, "onnxruntime") as (second, _crops):
        assert second is not first
    assert len(cache) == 1 and closed == ["a"]
    cache.clear()
    assert len(cache) == 0


def test_pleura_score_run_moved_to_pleura_eval(capsys):
    """The runtime never imports train/: ``--run`` is ``pleura eval score`` now and the old
    spelling says so."""
    from stream import cli
    from train.frame import score_cli

    assert cli.main(["score", str(DEMO), "--run", "runs/x"]) == 2
    assert "pleura eval score --run RUN" in capsys.readouterr().err
    p = argparse.ArgumentParser()
    score_cli.add_arguments(p)
    args = p.parse_args(["--run", "runs/x", str(DEMO), "--device", "cpu", "--json", "o.json"])
    assert args.run == "runs/x" and args.paths == [str(DEMO)] and args.batch == 16


def test_pleura_eval_score_scores_clips_with_a_pytorch_run(tmp_path):
    """``pleura eval score --run``: a frame run folder (written as ``pleura train frame``
    writes it: ``config.json`` and ``best.pt``; untrained weights, training is not what is
    tested) through the same clip loop and core as ``pleura score``; only the engine differs."""
    torch = pytest.importorskip("torch")
    from stream import cli
    from train.frame.config import TrainConfig
    from train.frame.models import build_model

    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data=str(tmp_path), out=str(run), model="cnn-sord", device="cpu")
    (run / "config.json").write_text(cfg.to_json())
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg.model).state_dict()}, run / "best.pt")
    out = tmp_path / "run-scores.json"
    rc = cli.main(["eval", "score", "--run", str(run), str(DEMO), "--max-frames", "6",
                   "--batch", "4", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["name"] == "run"
    _check_torch_doc(doc, 6)
    assert cli.main(["eval", "score", "--run", str(tmp_path / "nothing"), str(DEMO)]) == 2


def _check_torch_doc(doc: dict, n: int) -> None:
    from engines.uninorm import uninorm_reduce, video_probs

    clip = doc["clips"][0]
    assert doc["model"]["backend"] == "torch" and doc["model"]["e"] == list(DEFAULT_E)
    assert clip["ok"] and clip["n_frames"] == n and len(clip["frames"][0]["boxes"]) == 2
    P = np.array([f["probs"] for f in clip["frames"]])
    np.testing.assert_allclose(clip["video"]["probs"],
                               video_probs(uninorm_reduce(P, np.asarray(DEFAULT_E))), atol=1e-5)
