"""Bundle loading and verification, and the ONNX Runtime engine on the dummy bundle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import engines
from engines.bundle import SCHEMA_VERSION, BundleError, load_bundle, write_manifest
from engines.preprocess import preprocess_batch
from engines.testing import make_dummy_bundle


@pytest.fixture(scope="module")
def dummy(tmp_path_factory):
    return make_dummy_bundle(tmp_path_factory.mktemp("dummy"))


@pytest.fixture()
def copy(dummy, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(dummy, dst)
    return dst


def test_load_dummy_bundle(dummy):
    b = load_bundle(dummy)
    assert b.frame_file.name == "frame.onnx"
    assert b.cpu_frame_file == b.frame_file
    assert (b.frame_spec.height, b.frame_spec.width, b.frame_spec.channels) == (224, 224, 3)
    assert b.seg_spec is not None and (b.seg_spec.height, b.seg_spec.width) == (200, 260)
    assert b.seg_spec.mean == 0.5 and b.seg_spec.std == 0.5
    assert len(b.class_names) == 4 and len(b.seg_class_names) == 5
    assert b.uninorm_e == (0.3, 0.5, 0.6, 0.8)
    assert [m.name for m in b.seg_members] == ["dummy"]
    assert set(b.files) == {"frame.onnx", "seg-dummy.onnx", "seg-dummy-mc.onnx",
                            "aggregator.json"}


def test_dummy_bundle_is_deterministic(dummy, tmp_path):
    again = load_bundle(make_dummy_bundle(tmp_path / "again"))
    assert again.files == load_bundle(dummy).files


@pytest.mark.parametrize("name", ["frame.onnx", "seg-dummy-mc.onnx", "aggregator.json"])
def test_one_changed_byte_is_refused_naming_the_file(copy, name):
    f = copy / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"file {name} was altered.*pleura export"):
        load_bundle(copy)


def test_truncated_file_is_refused(copy):
    f = copy / "seg-dummy.onnx"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"file seg-dummy.onnx is truncated"):
        load_bundle(copy)


def test_missing_file_is_refused(copy):
    (copy / "frame.onnx").unlink()
    with pytest.raises(BundleError, match=r"file frame.onnx is missing"):
        load_bundle(copy)


def test_missing_manifest_and_not_a_directory(copy, tmp_path):
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")


def test_other_schema_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=rf"version {SCHEMA_VERSION + 1}.*pleura export"):
        load_bundle(copy)


def test_model_not_listed_under_files_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    del m["files"]["seg-dummy.onnx"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="seg-dummy.onnx is not listed"):
        load_bundle(copy)


def test_bad_aggregator_is_refused(copy):
    (copy / "aggregator.json").write_text('{"e": [0.1, 2.0, 0.3, 0.4]}')
    write_manifest(copy, seg_members=[{"name": "dummy", "file": "seg-dummy.onnx"}],
                   aggregator_file="aggregator.json")
    with pytest.raises(BundleError, match=r"aggregator.json: e must be 4 values in \[0, 1\]"):
        load_bundle(copy)


def test_ort_engine_frame_contract(dummy):
    eng = engines.create_engine(dummy, backend="onnxruntime", threads=1)
    assert eng.backend == "onnxruntime" and eng.device == "cpu"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (300 + 20 * i, 400), dtype=np.uint8) for i in range(5)]
    frames[1][:] = 0
    x, _ = preprocess_batch(frames, eng.bundle.frame_spec)
    out = eng.frame(x)
    assert out.probs.shape == (5, 4) and out.probs.dtype == np.float32
    assert out.theta1.shape == out.theta2.shape == (5, 2, 3)
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
    assert np.abs(out.probs[0] - out.probs[1]).max() > 1e-3  # output depends on the input
    # batch parity: one at a time == all at once
    for i in range(5):
        one = eng.frame(x[i])
        np.testing.assert_allclose(one.probs[0], out.probs[i], atol=1e-5)
        np.testing.assert_allclose(one.theta2[0], out.theta2[i], atol=1e-5)


def test_ort_engine_rejects_wrong_shape(dummy):
    eng = engines.create_engine(dummy, backend="onnxruntime", threads=1)
    with pytest.raises(ValueError, match=r"\(B, 3, 224, 224\).*preprocess_batch"):
        eng.frame(np.zeros((1, 1, 224, 224), np.float32))


def test_ort_engine_segment_and_mc(dummy):
    eng = engines.create_engine(dummy, backend="onnxruntime", threads=1)
    assert eng.has_segmentation()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 1, 200, 260)).astype(np.float32)
    det = eng.segment(x)
    assert det.probs.shape == (2, 5, 200, 260) and det.std is None
    np.testing.assert_allclose(det.probs.sum(1), 1.0, atol=1e-5)
    mc = eng.segment(x, mc_samples=5)
    assert mc.probs.shape == (2, 5, 200, 260) and mc.std.shape == (2, 200, 260)
    np.testing.assert_allclose(mc.probs.sum(1), 1.0, atol=1e-5)
    assert mc.std.min() >= 0 and mc.std.mean() > 1e-3  # passes really differ
    assert not np.allclose(mc.probs, eng.segment(x, mc_samples=5).probs)


def test_no_seg_bundle(tmp_path):
    eng = engines.create_engine(make_dummy_bundle(tmp_path, seg=False), backend="onnxruntime")
    assert not eng.has_segmentation()
    with pytest.raises(NotImplementedError, match="no segmentation"):
        eng.segment(np.zeros((1, 1, 200, 260), np.float32))


def test_unknown_backend_lists_valid_ones(dummy):
    with pytest.raises(ValueError, match=r"unknown backend 'openvino'; valid: auto, "
                                         r"onnxruntime, tensorrt"):
        engines.create_engine(dummy, backend="openvino")


def test_default_bundle_path():
    p = engines.default_bundle_path()
    assert p.parts[-3:] == ("engines", "bundles", "default")


SHIPPED = sorted(p.name for p in engines.default_bundle_path().parent.iterdir()
                 if (p / "manifest.json").is_file())


@pytest.mark.parametrize("name", SHIPPED or ["default"])
def test_shipped_bundles_score_without_torch(name):
    """Every shipped bundle loads (hashes, schema) and scores with torch blocked."""
    path = engines.default_bundle_path().parent / name
    if not (path / "manifest.json").is_file():
        pytest.skip("no default bundle in this checkout yet")
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'onnx', 'train'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import numpy as np, engines\n"
        "from engines.preprocess import preprocess_batch\n"
        f"eng = engines.create_engine({str(path)!r}, backend='onnxruntime', threads=1)\n"
        "rng = np.random.default_rng(0)\n"
        "frames = [rng.integers(0, 255, (300, 400), dtype=np.uint8) for _ in range(2)]\n"
        "x, _ = preprocess_batch(frames, eng.bundle.frame_spec)\n"
        "out = eng.frame(x)\n"
        "assert out.probs.shape == (2, 4) and abs(out.probs.sum(1) - 1).max() < 1e-4\n"
        "if eng.has_segmentation():\n"
        "    s, _ = preprocess_batch(frames[:1], eng.bundle.seg_spec)\n"
        "    seg = eng.segment(s, mc_samples=2)\n"
        "    assert seg.probs.shape == (1, 5, 200, 260) and seg.std is not None\n"
        "print('ok', eng.frame_file.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
