"""Multiply-accumulates of an ONNX graph: what ONNX Runtime executes, and what the outputs need.

Two numbers per graph, for the outputs the runtime actually fetches (``engines`` runs every
graph output, so by default all of them):

- **executed**: every Conv / Gemm / MatMul (and int8 forms) that the requested outputs depend
  on, at the tensor shapes ONNX Runtime really computes. This is the work the CPU does, so it is
  the one to hold against the machine's peak ("% of the limit" ≤ 100 % when the peak is right).
- **used**: the same, counting only the *batch rows* (axis 0) whose values reach an output.
  Reg-STN as exported runs its classifier on both crops stacked as one batch of 2B
  (``torch.cat([crop1, crop2])`` → CNN → ``logits[:B]``): crop 2's classification is computed
  and thrown away (Roy et al. 2020 score crop 1; crop 2 only matters in training). Executed
  counts it, used does not; the difference is what pruning the export would save.

Rows are traced backwards from the outputs through ops that treat each batch row on its own
(:data:`ROW_WISE`: convolutions, activations, pooling, element-wise, GridSample, ...), mapped
through Slice / Concat / Split / Gather on axis 0, and widened to "all rows" by anything else,
so the used count is conservative (never below the truth).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COUNTED_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger")
INT8_OPS = ("ConvInteger", "QLinearConv", "MatMulInteger")

ROW_WISE = frozenset((
    "Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Relu", "LeakyRelu", "PRelu",
    "Sigmoid", "Tanh", "Clip", "Elu", "Selu", "Erf", "Gelu", "HardSigmoid", "HardSwish",
    "Softplus", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Pow", "Floor", "Ceil",
    "Round", "Sign", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Add", "Sub", "Mul",
    "Div", "Max", "Min", "Mean", "Sum", "Where", "Cast", "Identity", "Dropout",
    "QuantizeLinear", "DequantizeLinear", "Softmax", "LogSoftmax", "Resize", "Upsample",
    "GridSample", "Flatten", "Equal", "Less", "Greater", "Not", "And", "Or",
))
"""Ops whose output row r depends only on row r of each same-batch input (axis 0 untouched;
Softmax / Flatten / Reduce* / Transpose / Reshape are checked for that in :func:`_row_map`)."""


RESHAPING = frozenset(("Flatten", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Gather",
                       "ReduceMean", "ReduceMax", "ReduceSum", "GlobalAveragePool"))
"""Ops that change the rank but (when :func:`_row_map` lets them through) keep axis 0."""


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _run_all(model) -> tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray]]:
    """Run the model once on zeros (dynamic dims = 1) exposing every tensor.

    Returns:
        (shape of every tensor incl. initializers, values of small int tensors: Slice and
        Gather parameters).
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    have = {o.name for o in g.output}
    for n in g.node:
        for name in n.output:
            if name and name not in have:
                g.output.append(onnx.helper.make_empty_tensor_value_info(name))
                have.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, np.uint8 if "uint8" in i.type else np.float32)
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(names, feeds), strict=True))
    vals.update(inits)
    vals.update(feeds)
    shapes = {k: tuple(np.shape(v)) for k, v in vals.items()}
    small = {k: np.asarray(v) for k, v in vals.items()
             if np.issubdtype(np.asarray(v).dtype, np.integer) and np.size(v) <= 64}
    return shapes, small


def _macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    out = shapes[node.output[0]]
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        w = shapes[node.input[3] if node.op_type == "QLinearConv" else node.input[1]]
        return int(np.prod(out)) * int(np.prod(w[1:]))  # w: (C_out, C_in/groups, kh, kw)
    a = shapes[node.input[0]]
    trans_a = node.op_type == "Gemm" and _attr(node, "transA", 0)
    return int(np.prod(out)) * int(a[-2] if trans_a else a[-1])


def _rows(shape: tuple[int, ...]) -> int:
    return int(shape[0]) if shape else 1


def _axis0_map(node, shapes, small, out_rows: set[int]) -> dict[str, set[int]] | None:
    """Input rows needed for ``out_rows`` of a Slice / Concat / Split / Gather on axis 0, or
    None when the node does not act on axis 0 (then the row-wise rule applies)."""
    op, ins = node.op_type, list(node.input)
    if op == "Slice" and all(n in small for n in ins[1:] if n):
        starts, ends = small[ins[1]].tolist(), small[ins[2]].tolist()
        axes = small[ins[3]].tolist() if len(ins) > 3 and ins[3] else list(range(len(starts)))
        steps = small[ins[4]].tolist() if len(ins) > 4 and ins[4] else [1] * len(starts)
        rank = len(shapes[ins[0]])
        axes = [a % rank for a in axes]
        if 0 not in axes:
            return None
        k = axes.index(0)
        src = range(_rows(shapes[ins[0]]))[slice(starts[k], ends[k], steps[k])]
        return {ins[0]: {src[r] for r in out_rows}}
    if op == "Concat" and _attr(node, "axis") % len(shapes[node.output[0]]) == 0:
        need, off = {}, 0
        for name in ins:
            n = _rows(shapes[name])
            need[name] = {r - off for r in out_rows if off <= r < off + n}
            off += n
        return need
    if op == "Gather" and (_attr(node, "axis", 0) or 0) == 0 and ins[1] in small:
        idx = small[ins[1]]
        n = _rows(shapes[ins[0]])
        if idx.ndim == 0:
            return {ins[0]: {int(idx) % n}}
        if idx.ndim == 1:
            return {ins[0]: {int(idx[r]) % n for r in out_rows}}
    return None


def _row_map(node, shapes, small, needed: dict[str, set[int]]) -> dict[str, set[int] | None]:
    """Rows of each input that the needed rows of the node's outputs depend on (None = all)."""
    out0 = node.output[0]
    rows = needed.get(out0, set())
    if node.op_type == "Split" and _attr(node, "axis", 0) % len(shapes[node.input[0]]) == 0:
        need, off = set(), 0
        for o in node.output:
            need |= {off + r for r in needed.get(o, set())}
            off += _rows(shapes[o])
        return {node.input[0]: need}
    mapped = _axis0_map(node, shapes, small, rows)
    if mapped is not None:
        return mapped
    op, out_shape = node.op_type, shapes[out0]
    row_wise = op in ROW_WISE or op in ("Slice", "Concat", "Gather", "Gemm", "MatMul",
                                        "Transpose", "Reshape", "ReduceMean", "ReduceMax",
                                        "ReduceSum", "Squeeze", "Unsqueeze")
    if op in ("Softmax", "LogSoftmax", "Flatten", "Concat", "Gather", "Squeeze", "Unsqueeze"):
        axis = _attr(node, "axis", 1 if op == "Flatten" else -1)
        if op in ("Squeeze", "Unsqueeze"):
            ax = _attr(node, "axes") or (small[node.input[1]].tolist()
                                         if len(node.input) > 1 and node.input[1] in small
                                         else [0])
            axis = min(a % max(len(out_shape), 1) for a in ax) if ax else 0
        row_wise = row_wise and axis % max(len(out_shape), 1) != 0
    if op == "Transpose":
        row_wise = (list(_attr(node, "perm") or [1]) or [1])[0] == 0
    if op.startswith("Reduce"):
        axes = _attr(node, "axes") or (small[node.input[1]].tolist()
                                       if len(node.input) > 1 and node.input[1] in small else [])
        row_wise = bool(axes) and 0 not in [a % len(shapes[node.input[0]]) for a in axes]
    if op == "Reshape":
        row_wise = bool(out_shape) and _rows(out_shape) == _rows(shapes[node.input[0]])
    if op == "Gemm":
        row_wise = not _attr(node, "transA", 0)
    if not row_wise or not out_shape:
        return {i: None for i in node.input if i}
    out: dict[str, set[int] | None] = {}
    for k, name in enumerate(node.input):
        if not name:
            continue
        s = shapes.get(name, ())
        same_batch = len(s) == len(out_shape) and _rows(s) == _rows(out_shape)
        if k == 0 and op in RESHAPING:  # rank changes, axis 0 stays (checked above)
            same_batch = bool(s) and _rows(s) == _rows(out_shape)
        if op in ("Gemm", "MatMul") and len(out_shape) == 2:
            same_batch = k == 0  # (M, K) x (K, N): only A's rows are the output's rows
        out[name] = set(rows) if same_batch else None
    return out


def _needed(graph, shapes, small, outputs: Iterable[str]) -> dict[str, set[int]]:
    """Backward pass: the rows of every tensor that reach ``outputs``."""
    needed: dict[str, set[int]] = {o: set(range(_rows(shapes[o]))) for o in outputs}
    for node in reversed(list(graph.node)):  # ONNX nodes are topologically sorted
        if not any(needed.get(o) for o in node.output if o):
            continue
        for name, rows in _row_map(node, shapes, small, needed).items():
            if name not in shapes:
                continue
            full = set(range(_rows(shapes[name])))
            needed[name] = needed.get(name, set()) | (full if rows is None else rows & full)
    return needed


def _is_int8(node, producers: dict[str, str]) -> bool:
    if node.op_type in INT8_OPS:
        return True
    w = node.input[1] if len(node.input) > 1 else ""
    return node.op_type in COUNTED_OPS and producers.get(w) == "DequantizeLinear"


def count(path: str | Path, outputs: Sequence[str] | None = None) -> dict[str, Any]:
    """MACs of one batch-1 inference of the ONNX model at ``path``.

    Args:
        path: an ONNX file (fp32, or QDQ / integer int8).
        outputs: the graph outputs the caller fetches (default: all, as ``engines`` does).

    Returns:
        {"outputs", "macs" / "macs_used" / "macs_int8" / "per_output_macs" (exact integers),
        "gmac" (executed for those outputs), "gmac_used" (rows that reach them),
        "gmac_int8" / "gmac_int8_used" (the part run as int8: QDQ convolutions and integer
        ops), "per_output" {name: gmac_used of that output alone}, "conv_nodes", "layers"}.

    Raises:
        ValueError: an output name that is not in the graph.
    """
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    all_outputs = [o.name for o in g.output]
    outputs = list(outputs or all_outputs)
    bad = [o for o in outputs if o not in all_outputs]
    if bad:
        raise ValueError(f"{path}: no graph output(s) {bad}; it has {all_outputs}")
    shapes, small = _run_all(model)
    producers = {o: n.op_type for n in g.node for o in n.output}
    counted = [n for n in g.node if n.op_type in COUNTED_OPS]

    def tally(outs: Sequence[str]) -> dict[str, int]:
        need = _needed(g, shapes, small, outs)
        t = {"exec": 0, "used": 0, "int8": 0, "int8_used": 0}
        for n in counted:
            rows = need.get(n.output[0])
            if not rows:
                continue
            m = _macs(n, shapes)
            used = m * len(rows) // _rows(shapes[n.output[0]])
            t["exec"] += m
            t["used"] += used
            if _is_int8(n, producers):
                t["int8"] += m
                t["int8_used"] += used
        return t

    t = tally(outputs)
    return {"outputs": outputs, "macs": t["exec"], "macs_used": t["used"],
            "macs_int8": t["int8"], "per_output_macs": {o: tally([o])["used"] for o in outputs},
            "gmac": round(t["exec"] / 1e9, 4),
            "gmac_used": round(t["used"] / 1e9, 4), "gmac_int8": round(t["int8"] / 1e9, 4),
            "gmac_int8_used": round(t["int8_used"] / 1e9, 4),
            "per_output": {o: round(tally([o])["used"] / 1e9, 4) for o in outputs},
            "conv_nodes": sum(n.op_type in ("Conv", "ConvInteger", "QLinearConv")
                              for n in counted),
            "layers": len(counted)}
