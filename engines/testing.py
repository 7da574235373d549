"""A tiny, contract-true bundle for tests (stream, ui, engines) that needs no training.

:func:`make_dummy_bundle` writes, in well under a second, a bundle whose models have the real
inputs and outputs of a trained pleura bundle but random fixed weights:

- ``frame.onnx``: ``frames`` (B, 3, 224, 224) -> ``probs`` (B, 4) softmax, ``theta1``,
  ``theta2`` (B, 2, 3). The outputs depend on the input (4x4 average-pooled intensities ->
  linear -> softmax / tanh), so different frames give different scores and boxes. With
  ``findings=True`` it has a 4th output ``findings`` (B, 5) sigmoid, named
  :data:`DUMMY_FINDINGS` in the manifest, as a frame model with a findings head.
- ``seg-dummy.onnx``: ``image`` (B, 1, 200, 260) -> ``probs`` (B, 5, 200, 260) softmax, and
  ``seg-dummy-mc.onnx``, the same model with an always-on dropout (RandomUniformLike mask)
  for MC-dropout sampling.
- ``aggregator.json`` and a verified ``manifest.json``.

It is **not a model**: its scores mean nothing. ``onnx`` is imported inside the function, since
the runtime does not depend on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.bundle import OPSET, write_aggregator, write_manifest
from engines.preprocess import FRAME_SPEC, SEG_SPEC

IR_VERSION = 8  # what opset 17 needs; readable by every ONNX Runtime >= 1.14 and TensorRT 10
DUMMY_FINDINGS = ("b_lines", "consolidations", "effusion", "a_lines", "pleural_irregularities")
"""Finding names of a dummy bundle made with ``findings=True`` (those of ``pleura train real``)."""


def _model(graph, onnx):
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="pleura.engines.testing")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _findings_head(rng: np.random.Generator, onnx, nf: int) -> tuple[list, list, list]:
    """Initialisers, nodes and output of ``findings = sigmoid(feat @ W + b)``, (B, F)."""
    h, t = onnx.helper, onnx.TensorProto
    nfind = len(DUMMY_FINDINGS)
    inits = [onnx.numpy_helper.from_array(rng.normal(0, 1.5, (nf, nfind)).astype(np.float32),
                                          "w_find"),
             onnx.numpy_helper.from_array(rng.normal(0, 0.8, (nfind,)).astype(np.float32),
                                          "b_find")]
    nodes = [h.make_node("MatMul", ["feat", "w_find"], ["find0"]),
             h.make_node("Add", ["find0", "b_find"], ["find1"]),
             h.make_node("Sigmoid", ["find1"], ["findings"])]
    return inits, nodes, [h.make_tensor_value_info("findings", t.FLOAT, ["batch", nfind])]


def _frame_graph(rng: np.random.Generator, onnx, findings_rng: np.random.Generator | None = None):
    h, t = onnx.helper, onnx.TensorProto
    c, hh, ww = FRAME_SPEC.channels, FRAME_SPEC.height, FRAME_SPEC.width
    k = hh // 4  # 4x4 pooled grid per channel
    nf = c * 16
    inits = [
        onnx.numpy_helper.from_array(rng.normal(0, 1.5, (nf, 4)).astype(np.float32), "w_cls"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.5, (4,)).astype(np.float32), "b_cls"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.6, (nf, 6)).astype(np.float32), "w_t1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.6, (nf, 6)).astype(np.float32), "w_t2"),
        # theta = base + 0.2 * tanh(f @ W): rotation/translation/scale near the paper's priors
        onnx.numpy_helper.from_array(np.array([0.5, 0, 0.1, 0, 0.5, 0.1], np.float32), "base1"),
        onnx.numpy_helper.from_array(np.array([0.75, 0, -0.1, 0, 0.75, 0], np.float32), "base2"),
        onnx.numpy_helper.from_array(np.array(0.2, np.float32), "amp"),
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "centre"),
        onnx.numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "shape_theta"),
    ]
    nodes = [
        h.make_node("AveragePool", ["frames"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        h.make_node("Flatten", ["pooled"], ["feat0"], axis=1),
        h.make_node("Sub", ["feat0", "centre"], ["feat"]),
        h.make_node("MatMul", ["feat", "w_cls"], ["logits0"]),
        h.make_node("Add", ["logits0", "b_cls"], ["logits"]),
        h.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    for i in (1, 2):
        nodes += [
            h.make_node("MatMul", ["feat", f"w_t{i}"], [f"t{i}a"]),
            h.make_node("Tanh", [f"t{i}a"], [f"t{i}b"]),
            h.make_node("Mul", [f"t{i}b", "amp"], [f"t{i}c"]),
            h.make_node("Add", [f"t{i}c", f"base{i}"], [f"t{i}d"]),
            h.make_node("Reshape", [f"t{i}d", "shape_theta"], [f"theta{i}"]),
        ]
    outputs = [h.make_tensor_value_info("probs", t.FLOAT, ["batch", 4]),
               h.make_tensor_value_info("theta1", t.FLOAT, ["batch", 2, 3]),
               h.make_tensor_value_info("theta2", t.FLOAT, ["batch", 2, 3])]
    if findings_rng is not None:  # its own generator: the other weights stay as they were
        f_inits, f_nodes, f_out = _findings_head(findings_rng, onnx, nf)
        inits, nodes, outputs = inits + f_inits, nodes + f_nodes, outputs + f_out
    graph = h.make_graph(
        nodes, "dummy_reg_stn",
        [h.make_tensor_value_info("frames", t.FLOAT, ["batch", c, hh, ww])], outputs, inits)
    return _model(graph, onnx)


def _seg_graph(rng: np.random.Generator, onnx, mc: bool):
    h, t = onnx.helper, onnx.TensorProto
    hid = 8
    inits = [
        onnx.numpy_helper.from_array(rng.normal(0, 1.0, (hid, 1, 3, 3)).astype(np.float32), "w1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.3, (hid,)).astype(np.float32), "b1"),
        onnx.numpy_helper.from_array(rng.normal(0, 1.5, (5, hid, 1, 1)).astype(np.float32), "w2"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.3, (5,)).astype(np.float32), "b2"),
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "p_drop"),
        onnx.numpy_helper.from_array(np.array(2.0, np.float32), "keep_scale"),
    ]
    nodes = [h.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["r1"])]
    feat = "r1"
    if mc:  # inverted dropout, p = 0.5, kept on at inference: a fresh mask every run
        nodes += [h.make_node("RandomUniformLike", ["r1"], ["u"], dtype=t.FLOAT),
                  h.make_node("Greater", ["u", "p_drop"], ["keep"]),
                  h.make_node("Cast", ["keep"], ["keepf"], to=t.FLOAT),
                  h.make_node("Mul", ["r1", "keepf"], ["d0"]),
                  h.make_node("Mul", ["d0", "keep_scale"], ["d1"])]
        feat = "d1"
    nodes += [h.make_node("Conv", [feat, "w2", "b2"], ["logits"]),
              h.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = h.make_graph(
        nodes, "dummy_seg" + ("_mc" if mc else ""),
        [h.make_tensor_value_info("image", t.FLOAT, ["batch", 1, SEG_SPEC.height, SEG_SPEC.width])],
        [h.make_tensor_value_info("probs", t.FLOAT, ["batch", 5, SEG_SPEC.height, SEG_SPEC.width])],
        inits)
    return _model(graph, onnx)


def make_dummy_bundle(directory: str | Path, seg: bool = True, seed: int = 0,
                      findings: bool = False) -> Path:
    """Write a tiny valid bundle (random fixed weights, real I/O contract) into ``directory``.

    Args:
        directory: created if needed; existing bundle files in it are overwritten.
        seg: include a segmentation member (with its MC-dropout variant).
        seed: weight seed (same seed -> byte-identical models).
        findings: give the frame model a ``findings`` output (:data:`DUMMY_FINDINGS`).

    Returns:
        The bundle directory, ready for :func:`engines.load_bundle`.
    """
    import onnx  # lazily: the runtime does not need onnx

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    find_rng = np.random.default_rng(seed + 2) if findings else None
    onnx.save(_frame_graph(rng, onnx, find_rng), str(out / "frame.onnx"))
    members = []
    if seg:
        seg_rng = np.random.default_rng(seed + 1)
        state = seg_rng.bit_generator.state
        onnx.save(_seg_graph(seg_rng, onnx, mc=False), str(out / "seg-dummy.onnx"))
        seg_rng.bit_generator.state = state  # same weights in the MC variant
        onnx.save(_seg_graph(seg_rng, onnx, mc=True), str(out / "seg-dummy-mc.onnx"))
        members.append({"name": "dummy", "arch": "conv3x3-conv1x1 (test dummy)",
                        "file": "seg-dummy.onnx", "mc_file": "seg-dummy-mc.onnx",
                        "dropout": 0.5})
    write_aggregator(out, [0.3, 0.5, 0.6, 0.8])
    write_manifest(
        out, seg_members=members, aggregator_file="aggregator.json",
        created_by="engines.testing.make_dummy_bundle (random weights: a test fixture, "
                   "not a model)",
        name="dummy", commands=[f"python -c \"from engines.testing import make_dummy_bundle; "
                                f"make_dummy_bundle('{out}', seg={seg}, seed={seed}, "
                                f"findings={findings})\""],
        training={"data": "none (random weights)"},
        finding_names=DUMMY_FINDINGS if findings else ())
    return out
