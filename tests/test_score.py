"""`pleura score` on a dummy bundle: real PyAV decoding, real ONNX Runtime, real files.

The dummy bundle (engines.testing.make_dummy_bundle) has random fixed weights but the real
input/output contract; it stands in until the trained default bundle exists.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import engines
from engines.preprocess import preprocess_batch
from engines.scorer import load_scorer
from engines.testing import make_dummy_bundle
from engines.uninorm import uninorm_reduce, video_probs
from stream import cli
from stream.score import CSV_FIELDS, find_clips, score_paths

N_FRAMES = 12


def _frames(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """A moving bright pleura-like line over speckle: different frames, different scores."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 60, (h, w), dtype=np.uint8)
        y = h // 4 + (i * 3) % (h // 2)
        cv2.line(img, (0, y), (w - 1, y), 230, 3)
        cv2.circle(img, (w // 2, (y + h // 2) % h), 6 + i % 8, 255, -1)
        out.append(img)
    return out


def _write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width = frames[0].shape
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _write_gif(path: Path, frames: list[np.ndarray]) -> None:
    from PIL import Image

    imgs = [Image.fromarray(np.stack([f] * 3, -1)) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    bundle = make_dummy_bundle(root / "bundle", seg=False)
    clips = root / "clips"
    (clips / "sub").mkdir(parents=True)
    _write_mp4(clips / "sim.mp4", _frames(N_FRAMES, 96, 128, 0))  # grey, wide
    _write_gif(clips / "sub" / "anim.GIF", _frames(7, 70, 50, 1))  # RGB palette, tall, odd
    (clips / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 40)
    (clips / "notes.txt").write_text("not a clip")
    return bundle, clips


def test_find_clips_walks_folders(setup):
    _, clips = setup
    found = [p.name for p in find_clips([clips])]
    assert sorted(found) == ["anim.GIF", "broken.avi", "sim.mp4"]


def test_cli_scores_good_clips_reports_corrupt_and_exits_1(setup, tmp_path, capsys):
    bundle, clips = setup
    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    rc = cli.main(["score", str(clips), "--bundle", str(bundle), "--json", str(out_json),
                   "--csv", str(out_csv), "--batch", "5"])
    assert rc == 1
    stdout = capsys.readouterr().out
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 3
    assert any("broken.avi: FAILED" in line for line in lines)
    assert any(f"sim.mp4: {N_FRAMES} frames, video score" in line for line in lines)

    doc = json.loads(out_json.read_text())
    # Schema (docs/score-json.md).
    assert doc["schema"] == "pleura-score" and doc["schema_version"] == 1
    assert set(doc["model"]) >= {"name", "backend", "e", "input"} and len(doc["model"]["e"]) == 4
    assert doc["summary"]["n_clips"] == 3 and doc["summary"]["n_failed"] == 1
    by_name = {c["name"]: c for c in doc["clips"]}
    bad = by_name["broken.avi"]
    assert bad["ok"] is False and "broken.avi" in bad["error"]
    for name, n, hw in (("sim.mp4", N_FRAMES, [96, 128]), ("anim.GIF", 7, [70, 50])):
        c = by_name[name]
        assert c["ok"] is True and c["error"] is None
        assert c["n_frames"] == n == len(c["frames"]) and c["frame_hw"] == hw
        assert set(c["timing"]) == {"decode_s", "infer_s", "total_s", "fps"}
        assert c["timing"]["fps"] > 0
        for i, fr in enumerate(c["frames"]):
            assert fr["index"] == i
            assert len(fr["probs"]) == 4 and abs(sum(fr["probs"]) - 1) < 1e-4
            assert fr["score"] == int(np.argmax(fr["probs"]))
            boxes = np.array(fr["boxes"])
            assert boxes.shape == (2, 4, 2) and np.isfinite(boxes).all()
            assert 0 <= fr["video_score"] <= 3 and len(fr["video_probs"]) == 4
        # Boxes are in source-frame pixels: their centres lie on the frame (dummy θ near centre).
        centres = np.array([fr["boxes"] for fr in c["frames"]]).mean(axis=2)
        assert (centres[..., 0] > 0).all() and (centres[..., 0] < hw[1]).all()
        assert (centres[..., 1] > 0).all() and (centres[..., 1] < hw[0]).all()
        last = c["frames"][-1]
        assert last["video_score"] == c["video"]["score"]
        np.testing.assert_allclose(last["video_probs"], c["video"]["probs"], atol=1e-6)
        assert c["video"]["n_frames"] == n
        assert "findings" not in c["video"] and "findings" not in c["frames"][0]
    rows = out_csv.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("path,ok,error,n_frames,video_score")
    assert rows[0].split(",") == list(CSV_FIELDS)  # no findings head: no extra columns
    assert "finding_names" not in doc["model"] and "findings:" not in stdout


def test_running_score_after_last_frame_equals_batch(setup):
    bundle, clips = setup
    scorer = dataclasses.replace(load_scorer(bundle, backend="onnxruntime", threads=1),
                                 e=np.array([0.2, 0.4, 0.5, 0.9]))  # any e: the law holds
    doc = score_paths([clips / "sim.mp4"], scorer, batch=4, echo=None)
    clip = doc["clips"][0]
    # Independently: decode with PyAV, preprocess, run the engine in one batch, reduce at once.
    with av.open(str(clips / "sim.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    x, _ = preprocess_batch(frames, engines.load_bundle(bundle).frame_spec)
    P = scorer.engine.frame(x).probs.astype(np.float64)
    batch = uninorm_reduce(P, scorer.e)
    np.testing.assert_allclose(clip["video"]["aggregate"], batch, atol=1e-6)
    np.testing.assert_allclose(clip["video"]["probs"], video_probs(batch), atol=1e-6)
    # And the running value after every frame k equals the batch aggregate of frames 0..k.
    for k in (0, len(P) // 2, len(P) - 1):
        expect = video_probs(uninorm_reduce(P[: k + 1], scorer.e))
        np.testing.assert_allclose(clip["frames"][k]["video_probs"], expect, atol=1e-6)


def test_missing_path_is_reported_not_fatal(setup, tmp_path, capsys):
    bundle, clips = setup
    rc = cli.main(["score", str(tmp_path / "nope.mp4"), str(clips / "sim.mp4"),
                   "--bundle", str(bundle), "--max-frames", "3"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "nope.mp4: FAILED" in out and "sim.mp4: 3 frames" in out


def test_all_good_exits_0(setup, capsys):
    bundle, clips = setup
    assert cli.main(["score", str(clips / "sim.mp4"), "--bundle", str(bundle)]) == 0


def test_tampered_bundle_is_refused_with_a_message_not_a_traceback(setup, tmp_path, capsys):
    import shutil

    bundle, clips = setup
    bad = tmp_path / "tampered"
    shutil.copytree(bundle, bad)
    agg = bad / "aggregator.json"
    data = bytearray(agg.read_bytes())
    data[5] ^= 0x01  # one changed byte
    agg.write_bytes(bytes(data))
    rc = cli.main(["score", str(clips / "sim.mp4"), "--bundle", str(bad)])
    assert rc == 2
    out = capsys.readouterr().out
    assert "aggregator.json" in out and "pleura export" in out and "Traceback" not in out


def test_error_mid_clip_keeps_frames_scored_before_it(setup):
    from types import SimpleNamespace

    from stream.score import score_frames
    from stream.sources import SourceError

    bundle, _ = setup
    scorer = load_scorer(bundle, backend="onnxruntime", threads=1)

    def frames():
        for img in _frames(9, 64, 80, 2):
            yield SimpleNamespace(image=img)
        raise SourceError("clip.mp4: decoding failed after 9 frames")

    res = score_frames(frames(), scorer, batch=4)
    assert res["n_frames"] == 9  # every frame decoded before the failure is scored
    assert "decoding failed after 9 frames" in res["error"]
    assert res["video"]["n_frames"] == 9


# --------------------------------------------------------------------------- findings (issue #13)


def _check_findings_clip(c: dict, names: tuple[str, ...], P: np.ndarray) -> None:
    """Per-frame findings equal the engine's (N, F) ``P``; the clip summary is their statistics."""
    got = np.array([[fr["findings"][n] for n in names] for fr in c["frames"]])
    assert [list(fr["findings"]) for fr in c["frames"]] == [list(names)] * len(P)
    np.testing.assert_allclose(got, P, atol=1e-6)
    summary = c["video"]["findings"]
    assert list(summary) == list(names)
    for k, n in enumerate(names):
        s = summary[n]
        assert s["mean"] == pytest.approx(P[:, k].mean(), abs=1e-6)
        assert s["max"] == pytest.approx(P[:, k].max(), abs=1e-6)
        assert s["fraction"] == pytest.approx((P[:, k] >= 0.5).mean(), abs=1e-6)
        assert s["present"] is bool(P[:, k].mean() >= 0.5)


def _engine_findings(bundle: Path, clip: Path) -> np.ndarray:
    """(N, F) findings of every frame of ``clip``, decoded and scored in one batch."""
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    b = engines.load_bundle(bundle)
    x, _ = preprocess_batch(frames, b.frame_spec)
    return engines.create_engine(b, "onnxruntime", threads=1).frame(x).findings


def test_findings_per_frame_clip_summary_and_csv_columns(setup, tmp_path, capsys):
    from engines.testing import DUMMY_FINDINGS

    _, clips = setup
    bundle = make_dummy_bundle(tmp_path / "bundle", seg=False, findings=True)
    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    rc = cli.main(["score", str(clips / "sim.mp4"), str(tmp_path / "nope.mp4"), "--bundle",
                   str(bundle), "--json", str(out_json), "--csv", str(out_csv), "--batch", "5"])
    assert rc == 1  # the missing clip
    line = next(x for x in capsys.readouterr().out.splitlines() if "sim.mp4:" in x)
    assert ", findings: " in line
    doc = json.loads(out_json.read_text())
    assert doc["schema_version"] == 1 and doc["model"]["finding_names"] == list(DUMMY_FINDINGS)
    sim, missing = doc["clips"]
    P = _engine_findings(bundle, clips / "sim.mp4")
    assert P.shape == (N_FRAMES, len(DUMMY_FINDINGS))
    _check_findings_clip(sim, DUMMY_FINDINGS, P)
    present = [n for n in DUMMY_FINDINGS if sim["video"]["findings"][n]["present"]]
    from engines.findings import finding_label

    assert line.endswith(", findings: " + (", ".join(map(finding_label, present)) or "none"))
    # CSV: the fixed columns unchanged, then one clip-mean column per finding
    import csv

    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*CSV_FIELDS, *(f"{n}_mean" for n in DUMMY_FINDINGS)]
    for n in DUMMY_FINDINGS:
        assert float(rows[0][f"{n}_mean"]) == sim["video"]["findings"][n]["mean"]
        assert rows[1][f"{n}_mean"] == ""  # the clip that could not be opened
    assert missing["ok"] is False


def test_findings_of_a_bad_frame_drop_the_frame_not_the_clip(setup):
    from types import SimpleNamespace

    from engines.base import FrameOutput
    from stream.score import score_frames

    bundle, _ = setup
    scorer = load_scorer(bundle, backend="onnxruntime", threads=1)
    real = scorer.engine

    class WithFindings:  # the dummy engine plus a findings head, NaN for the 2nd frame
        def frame(self, x):
            out = real.frame(x)
            f = np.tile(np.linspace(0.2, 0.9, 3, dtype=np.float32), (len(x), 1))
            f[1] = np.nan  # batches of 3: frames 1 and 4
            return FrameOutput(out.probs, out.theta1, out.theta2, f)

    # names that do not match the output: generic names
    scorer = dataclasses.replace(scorer, engine=WithFindings(),
                                 finding_names=("b_lines", "effusion"))
    frames = [SimpleNamespace(image=img) for img in _frames(6, 64, 80, 3)]
    res = score_frames(frames, scorer, batch=3)
    assert res["n_frames"] == 4 and res["dropped"] == 2
    assert res["video"]["n_frames"] == 4  # uninorm and findings both skip the bad frames
    assert list(res["frames"][0]["findings"]) == ["finding_0", "finding_1", "finding_2"]
    assert res["video"]["findings"]["finding_2"] == {"mean": 0.9, "max": 0.9, "fraction": 1.0,
                                                     "present": True}
    assert res["video"]["findings"]["finding_0"]["present"] is False


def test_exported_real_bundle_reports_findings(setup, tmp_path):
    """The exported graph of `pleura train real` (torch, ~10 s), not only the dummy one."""
    pytest.importorskip("torch")
    from tests.test_real import _real_run

    _, clips = setup
    run = _real_run(tmp_path, [{"file": "a.mp4", "license": "CC BY 4.0", "score": 0}])
    out = tmp_path / "bundle"
    assert cli.main(["export", str(run), "--out", str(out)]) == 0
    names = engines.load_bundle(out).finding_names
    assert len(names) == 5
    scorer = load_scorer(out, backend="onnxruntime", threads=1)
    doc = score_paths([clips / "sim.mp4"], scorer, batch=4, echo=None)
    _check_findings_clip(doc["clips"][0], names, _engine_findings(out, clips / "sim.mp4"))
