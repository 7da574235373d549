"""Frame probabilities for the video stage: the torch engine adapter and the npz cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.base import FrameOutput  # noqa: E402
from train.video.features import (  # noqa: E402
    TorchFrameEngine,
    dataset_frame_probs,
    video_frame_probs,
)


class _Counting:
    """A stand-in engine that records how many frames it scored (probs from mean intensity)."""

    def __init__(self) -> None:
        self.frames = 0

    def frame(self, x: np.ndarray) -> FrameOutput:
        self.frames += len(x)
        m = x.mean(axis=(1, 2, 3))
        logits = np.stack([m, 1 - m, 2 * m, 0.5 + 0 * m], 1)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        theta = np.tile(np.array([[0.5, 0, 0], [0, 0.5, 0]], np.float32), (len(x), 1, 1))
        return FrameOutput(p.astype(np.float32), theta, theta)


def test_torch_engine_matches_engine_contract():
    from train.frame.models.stn import RegSTN

    torch.manual_seed(0)
    eng = TorchFrameEngine(RegSTN(), "cpu")
    frames = np.random.default_rng(0).integers(0, 255, (3, 90, 120), dtype=np.uint8)
    P = video_frame_probs(frames, eng, batch=2)
    assert P.shape == (3, 4) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
    from engines.preprocess import preprocess_batch

    out = eng.frame(preprocess_batch(list(frames[:1]))[0])
    assert out.theta1.shape == (1, 2, 3) and out.theta2.shape == (1, 2, 3)
    np.testing.assert_allclose(out.probs[0], P[0], atol=1e-5)  # batching does not change it


def test_dataset_frame_probs_uses_cache(tmp_path):
    rng = np.random.default_rng(1)
    videos = {f"v{i}": rng.integers(0, 255, (5 + i, 40, 60), dtype=np.uint8) for i in range(3)}
    eng = _Counting()
    cache = tmp_path / "probs.npz"
    first = dataset_frame_probs(videos.__getitem__, ["v0", "v1"], eng, cache=cache, batch=4)
    assert eng.frames == 5 + 6 and cache.is_file()
    second = dataset_frame_probs(videos.__getitem__, ["v0", "v1", "v2"], eng, cache=cache)
    assert eng.frames == 5 + 6 + 7  # only v2 was scored again
    np.testing.assert_array_equal(first["v1"], second["v1"])
    assert [len(second[v]) for v in ("v0", "v1", "v2")] == [5, 6, 7]


def test_score_cli_runs_a_frame_run(tmp_path, capsys):
    """`pleura eval score --run RUN` (the PyTorch path) on a run folder with untrained weights."""
    import av

    from stream import cli
    from train.frame.config import TrainConfig
    from train.frame.models.registry import MODELS

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig(data="none", out=str(run)).to_json())
    torch.manual_seed(0)
    torch.save({"model": MODELS["reg-stn"].build().state_dict()}, run / "best.pt")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), mode="w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width = 48, 64
        s.pix_fmt = "yuv420p"
        from stream.sources import decode_file

        demo = Path(__file__).resolve().parents[1] / "stream" / "demo" / "demo-convex.mp4"
        for f, _ in zip(decode_file(demo), range(3), strict=False):  # a lung: the gate passes it
            img = cv2.resize(cv2.cvtColor(f.image, cv2.COLOR_RGB2GRAY), (64, 48))
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "o.json"
    assert cli.main(["eval", "score", str(clip), "--run", str(run), "--json", str(out)]) == 0
    import json

    doc = json.loads(out.read_text())
    assert doc["model"]["backend"] == "torch" and doc["clips"][0]["n_frames"] == 3
    # Reg-STN's initial crops: σ₁ = 0.5, so crop 1 spans half of the letterboxed frame's width.
    box = np.array(doc["clips"][0]["frames"][0]["boxes"][0])
    assert 0.3 * 64 < box[:, 0].max() - box[:, 0].min() < 0.7 * 64
