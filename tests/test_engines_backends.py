"""Backend selection and the TensorRT logic that runs without a GPU.

No GPU and no tensorrt are installed here. The ``auto`` tests replace the availability probes
(``gpu_available`` & co.) with monkeypatched stand-ins: that is the only mock, for missing
hardware. The TensorRT plan-cache, stale-plan and profile logic is pure and runs for real.
"""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import pytest

import engines
import engines.backends as backends
import engines.backends.tensorrt as trt_backend
from engines.backends import Choice, choose_backend
from engines.backends.tensorrt import (
    PlanKey,
    StalePlanError,
    check_plan,
    default_plan_dir,
    plan_key,
    profile_shapes,
    write_plan_meta,
)
from engines.testing import make_dummy_bundle

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def dummy(tmp_path_factory):
    return make_dummy_bundle(tmp_path_factory.mktemp("dummy"))


@pytest.mark.parametrize(("gpu", "trt", "cuda", "want"), [
    (True, True, True, ("tensorrt", "cuda")),
    (True, True, False, ("tensorrt", "cuda")),
    (True, False, True, ("onnxruntime", "cuda")),
    (True, False, False, ("onnxruntime", "cpu")),
    (False, False, False, ("onnxruntime", "cpu")),
    (False, True, True, ("onnxruntime", "cpu")),  # tensorrt installed but no GPU visible
])
def test_choose_backend_rule(gpu, trt, cuda, want):
    c = choose_backend(gpu, trt, cuda)
    assert (c.backend, c.device) == want and c.reason


def test_auto_on_this_machine_is_ort_cpu(dummy, caplog):
    # real probes: this CI machine has no GPU
    if backends.gpu_available():
        pytest.skip("a GPU is visible; this test is about the CPU fallback")
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        eng = engines.create_engine(dummy, backend="auto", threads=1)
    assert (eng.backend, eng.device) == ("onnxruntime", "cpu")
    assert "backend auto -> onnxruntime on cpu (no GPU visible" in caplog.text


def test_auto_falls_back_when_tensorrt_fails(dummy, monkeypatch, caplog):
    # Mock for missing hardware: pretend a GPU and tensorrt are present. Building the TensorRT
    # engine then fails for real (no tensorrt/CUDA here) and auto must fall back, loudly.
    monkeypatch.setattr(backends, "probe",
                        lambda: Choice("tensorrt", "cuda", "GPU and tensorrt present (mocked)"))
    with caplog.at_level(logging.INFO, logger="engines.backends"):
        eng = engines.create_engine(dummy, backend="auto", threads=1)
    assert eng.backend == "onnxruntime"
    assert "backend auto -> tensorrt" in caplog.text
    assert "TensorRT backend failed" in caplog.text
    out = eng.frame(np.zeros((1, 3, 224, 224), np.float32))
    assert out.probs.shape == (1, 4)


def test_probe_uses_gpu_probe(monkeypatch):
    # Mock for missing hardware: the probes themselves.
    monkeypatch.setattr(backends, "gpu_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_available", lambda: False)
    monkeypatch.setattr(backends, "ort_cuda_available", lambda: True)
    assert backends.probe().backend == "onnxruntime" and backends.probe().device == "cuda"
    monkeypatch.setattr(backends, "gpu_available", lambda: False)
    assert backends.probe().device == "cpu"


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_explicit_tensorrt_without_it_says_how_to_fix(dummy):
    with pytest.raises(RuntimeError, match=r"(tensorrt|cuda-python) is not installed.*"
                                           r"--backend onnxruntime"):
        engines.create_engine(dummy, backend="tensorrt")


def test_profile_shapes():
    assert profile_shapes((3, 224, 224), 16) == ((1, 3, 224, 224), (1, 3, 224, 224),
                                                 (16, 3, 224, 224))
    assert profile_shapes((1, 200, 260), 8, opt_batch=4)[1] == (4, 1, 200, 260)
    with pytest.raises(ValueError, match="only the batch dimension may be dynamic"):
        profile_shapes((-1, 224, 224), 4)
    with pytest.raises(ValueError, match="opt_batch"):
        profile_shapes((3, 224, 224), 4, opt_batch=5)


def test_plan_key_and_names(dummy):
    f = dummy / "frame.onnx"
    k = plan_key(f, "NVIDIA H100 80GB HBM3", "10.3.0", fp16=True, max_batch=16)
    assert k.onnx_sha256 == engines.load_bundle(dummy).files["frame.onnx"]
    name = k.plan_name("frame.onnx")
    assert name == f"frame-{k.onnx_sha256[:12]}-fp16-b16-nvidia-h100-80gb-hbm3.plan"
    other = [plan_key(f, "NVIDIA A100", "10.3.0", True, 16),
             plan_key(f, "NVIDIA H100 80GB HBM3", "10.3.0", False, 16),
             plan_key(f, "NVIDIA H100 80GB HBM3", "10.3.0", True, 8),
             plan_key(f, "NVIDIA H100 80GB HBM3", "10.3.0", True, 16, "0" * 64)]
    assert len({o.plan_name("frame.onnx") for o in other} | {name}) == 5
    with pytest.raises(ValueError, match="precision"):
        PlanKey("g", "10", "x", "int4", 1)


def _fake_plan(tmp_path, key):
    plan = tmp_path / key.plan_name("frame.onnx")
    plan.write_bytes(b"not a real plan, only bytes to hash")
    write_plan_meta(plan, key)
    return plan


def test_fresh_plan_accepted(tmp_path):
    key = PlanKey("NVIDIA L4", "10.3.0", "a" * 64, "fp16", 16)
    check_plan(_fake_plan(tmp_path, key), key)


@pytest.mark.parametrize(("field", "value", "msg"), [
    ("gpu", "NVIDIA A10", "gpu: built for 'NVIDIA L4'"),
    ("trt_version", "10.9.0", "trt_version: built for '10.3.0'"),
    ("onnx_sha256", "b" * 64, "onnx_sha256"),
    ("precision", "fp32", "precision: built for 'fp16'"),
])
def test_stale_plan_refused(tmp_path, field, value, msg):
    key = PlanKey("NVIDIA L4", "10.3.0", "a" * 64, "fp16", 16)
    plan = _fake_plan(tmp_path, key)
    now = PlanKey(**{**key.__dict__, field: value})
    with pytest.raises(StalePlanError, match=rf"stale \({msg}.*pleura build-engine"):
        check_plan(plan, now)


def test_altered_or_keyless_plan_refused(tmp_path):
    key = PlanKey("NVIDIA L4", "10.3.0", "a" * 64, "fp16", 16)
    plan = _fake_plan(tmp_path, key)
    plan.write_bytes(plan.read_bytes()[:-1])
    with pytest.raises(StalePlanError, match="altered or truncated"):
        check_plan(plan, key)
    plan.with_suffix(".json").unlink()
    with pytest.raises(StalePlanError, match="no key file"):
        check_plan(plan, key)
    with pytest.raises(FileNotFoundError, match="pleura build-engine"):
        check_plan(tmp_path / "none.plan", key)
    meta = json.loads(json.dumps({"key": {}}))
    plan.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(StalePlanError, match="stale"):
        check_plan(plan, key)


def test_default_plan_dir(tmp_path, monkeypatch):
    assert default_plan_dir(tmp_path) == tmp_path / "plans"
    # a read-only bundle (an installed package): tests run as root here, so the read-only
    # check is simulated by patching os.access in the module under test
    monkeypatch.setattr(trt_backend.os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_plan_dir(tmp_path) == tmp_path / "cache" / "pleura" / "plans"


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and backends.gpu_available()),
                    reason="needs an NVIDIA GPU with tensorrt and cuda-python")
def test_tensorrt_matches_ort_on_gpu(dummy, tmp_path):
    ref = engines.create_engine(dummy, backend="onnxruntime", device="cpu")
    trt = engines.create_engine(dummy, backend="tensorrt", fp16=False, plan_dir=tmp_path)
    x = np.random.default_rng(0).random((5, 3, 224, 224), dtype=np.float32)
    a, b = ref.frame(x), trt.frame(x)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    np.testing.assert_allclose(a.theta1, b.theta1, atol=1e-4)
    seg = trt.segment(np.zeros((2, 1, 200, 260), np.float32), mc_samples=4)
    assert seg.probs.shape == (2, 5, 200, 260) and seg.std is not None
    trt.close()
    # a second engine reuses the cached plans (no rebuild)
    plans = sorted(p.name for p in tmp_path.glob("*.plan"))
    engines.create_engine(dummy, backend="tensorrt", fp16=False, plan_dir=tmp_path).close()
    assert sorted(p.name for p in tmp_path.glob("*.plan")) == plans


def test_pack_frame_maps_outputs_by_name_in_any_engine_order():
    """TensorRT lists outputs in engine I/O order, not graph order: findings must follow names."""
    from engines.backends.common import pack_frame

    b = 3
    probs = np.full((b, 4), 0.25, np.float32)
    t1, t2 = np.zeros((b, 6), np.float32), np.ones((b, 2, 3), np.float32)
    found = np.linspace(0, 1, b * 5, dtype=np.float32).reshape(b, 5)
    out = pack_frame([t2, found, probs, t1], ["theta2", "findings", "probs", "theta1"])
    np.testing.assert_array_equal(out.findings, found)
    np.testing.assert_array_equal(out.probs, probs)
    assert out.theta1.shape == out.theta2.shape == (b, 2, 3) and out.theta2.min() == 1
    assert pack_frame([probs, t1, t2], ["probs", "theta1", "theta2"]).findings is None


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and backends.gpu_available()),
                    reason="needs an NVIDIA GPU with tensorrt and cuda-python")
def test_tensorrt_passes_findings_through_on_gpu(tmp_path):
    bundle = make_dummy_bundle(tmp_path / "b", seg=False, findings=True)
    ref = engines.create_engine(bundle, backend="onnxruntime", device="cpu")
    trt = engines.create_engine(bundle, backend="tensorrt", fp16=False, plan_dir=tmp_path)
    try:
        x = np.random.default_rng(1).random((3, 3, 224, 224), dtype=np.float32)
        a, b = ref.frame(x), trt.frame(x)
        assert b.findings is not None and b.findings.shape == (3, 5)
        np.testing.assert_allclose(a.findings, b.findings, atol=1e-4)
    finally:
        trt.close()
