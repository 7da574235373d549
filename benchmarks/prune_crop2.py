"""Remove crop 2's classifier from an exported Reg-STN graph (ONNX surgery, issue #28).

Roy et al. 2020 score a frame from crop 1; crop 2's classification only feeds the training
loss's consistency term. Bundles exported before :class:`train.frame.export_wrapper.
FrameExportWrapper` pruned it (``regstn-sim``) still run Φ_cnn on both crops stacked as one
batch of 2B and keep the first B rows of the logits::

    GridSample(θ₁), GridSample(θ₂) -> Concat(axis 0) -> Φ_cnn -> Slice(rows 0..B) -> Softmax

The surgery feeds crop 1 alone to Φ_cnn (for the int8 graph: to the QuantizeLinear in front
of it, whose per-tensor scale is unchanged, so crop 1 is quantised exactly as before), drops
the Slice (the logits now have B rows) and removes every node and initializer no output
needs any more (crop 2's sampling; θ₂ stays an output). It writes nothing unless every output
of the pruned graph equals the original's (ONNX Runtime, :data:`TOLERANCE`) on simulated and
random frames; then it replaces the files, records the surgery and its parity in the
manifest (``commands``, ``evaluation.crop2_pruned``), re-renders the model card, rehashes
the changed files (:func:`engines.bundle.sha256_file`) and verifies the bundle with
:func:`engines.load_bundle`.

    python -m benchmarks.prune_crop2 engines/bundles/regstn-sim [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 1e-5
"""Largest abs difference allowed between the pruned and the original graph, any output."""


class PruneError(RuntimeError):
    """The graph does not have the two-crop pattern, or pruning would change an output."""


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _const_ints(graph, name: str) -> list[int] | None:
    """Values of a constant int tensor (initializer or Constant node), else None."""
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t).reshape(-1).tolist()
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t).reshape(-1).tolist()
    return None


def prune_graph(model) -> dict[str, Any]:
    """Rewire ``model`` (an ``onnx.ModelProto``, edited in place) so Φ_cnn sees crop 1 only.

    Returns:
        {"concat", "slice", "removed_nodes", "removed_initializers"}.

    Raises:
        PruneError: no Concat of two GridSample outputs on axis 0, or ``probs`` is not
            Softmax(Slice(logits, rows from 0)).
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    concat = next((n for n in g.node if n.op_type == "Concat" and len(n.input) == 2
                   and all(producer.get(i) is not None and producer[i].op_type == "GridSample"
                           for i in n.input)
                   and next(a.i for a in n.attribute if a.name == "axis") == 0), None)
    if concat is None:
        raise PruneError("no Concat(GridSample, GridSample) on the batch axis: crop 2 is "
                         "not classified in this graph (already pruned?)")
    soft = producer.get("probs")
    sl = producer.get(soft.input[0]) if soft is not None and soft.op_type == "Softmax" else None
    if sl is None or sl.op_type != "Slice":
        raise PruneError("probs is not Softmax(Slice(logits)): not the two-crop export")
    starts = _const_ints(g, sl.input[1])
    axes = _const_ints(g, sl.input[3]) if len(sl.input) > 3 and sl.input[3] else [0]
    if starts != [0] or axes != [0]:
        raise PruneError(f"the Slice before probs keeps rows {starts} on axes {axes}, not "
                         "crop 1's rows 0..B")
    crop1 = concat.input[0]
    for n in _consumers(g).get(concat.output[0], []):
        for k, name in enumerate(n.input):
            if name == concat.output[0]:
                n.input[k] = crop1
    soft.input[0] = sl.input[0]
    return {"concat": concat.name, "slice": sl.name, **_drop_dead(model)}


def _drop_dead(model) -> dict[str, int]:
    """Remove nodes no graph output depends on, then initializers nothing reads."""
    g = model.graph
    need = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in need for o in n.output):
            keep.append(n)
            need |= set(n.input)
    keep.reverse()
    n_nodes = len(g.node) - len(keep)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    inits = [t for t in g.initializer if t.name in used]
    n_init = len(g.initializer) - len(inits)
    del g.initializer[:]
    g.initializer.extend(inits)
    return {"removed_nodes": n_nodes, "removed_initializers": n_init}


def _session(path_or_bytes):
    import onnxruntime as ort

    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


def parity_frames(n_sim: int = 32, n_random: int = 4, seed: int = 0) -> tuple[np.ndarray, str]:
    """Simulated B-mode frames (``pleura synth``'s simulator, both probes, mixed scores),
    preprocessed with the frame contract, plus uniform random inputs."""
    from engines.preprocess import FRAME_SPEC, preprocess_batch
    from train.calib_frames import random_frames, simulated_frames

    frames: list[np.ndarray] = []
    s = seed
    while len(frames) < n_sim:
        frames += simulated_frames(8, s)
        s += 1
    x = preprocess_batch(frames[:n_sim], FRAME_SPEC)[0]
    return (np.concatenate([x, random_frames(n_random, seed + 100)]).astype(np.float32),
            f"{n_sim} simulated frames (train.calib_frames.simulated_frames, seeds {seed}.."
            f"{s - 1}) + {n_random} uniform random")


def compare(before: Path | bytes, after: bytes, x: np.ndarray,
            batches: Sequence[int] = (1, 8)) -> dict[str, float]:
    """Max abs difference per output, original vs pruned graph, over ``x`` cut into batches
    of each size in ``batches`` (the batch axis is the one the surgery changes)."""
    a, b = _session(before), _session(after)
    names = [o.name for o in a.get_outputs()]
    if names != [o.name for o in b.get_outputs()]:
        raise PruneError(f"outputs changed: {names} -> {[o.name for o in b.get_outputs()]}")
    worst = dict.fromkeys(names, 0.0)
    feed = a.get_inputs()[0].name
    for batch in batches:
        for i in range(0, len(x), batch):
            xa = x[i:i + batch]
            for n, u, v in zip(names, a.run(names, {feed: xa}), b.run(names, {feed: xa}),
                               strict=True):
                worst[n] = max(worst[n], float(np.abs(u - v).max()))
    return worst


def _macs(path: Path) -> dict[str, Any]:
    from benchmarks.macs import count

    m = count(path)
    return {k: m[k] for k in ("gmac", "gmac_used", "gmac_int8", "macs", "macs_used", "layers")}


def prune_bundle(bundle: Path, dry_run: bool = False) -> dict[str, Any]:
    """Prune the frame graphs (fp32 and int8) of ``bundle``; see the module docstring.

    Returns:
        {file: {"parity", "macs_before", "macs_after", "surgery"}, "frames", "written"}.

    Raises:
        PruneError: a graph without the pattern, or an output that would change.
    """
    import onnx

    from engines.bundle import load_bundle

    b = load_bundle(bundle)  # hashes checked before anything is touched
    files = [b.frame_file, *([b.frame_int8_file] if b.frame_int8_file else [])]
    x, what = parity_frames()
    report: dict[str, Any] = {"frames": f"{what}; batches of 1 and 8", "tolerance": TOLERANCE}
    pruned: dict[Path, bytes] = {}
    for f in files:
        model = onnx.load(str(f))
        surgery = prune_graph(model)
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString()
        diff = compare(f, data, x)
        bad = {k: v for k, v in diff.items() if v > TOLERANCE}
        if bad:
            raise PruneError(f"{f.name}: pruning changes {bad} (> {TOLERANCE}); not written")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f.name).write_bytes(data)
            after = _macs(Path(tmp) / f.name)
        report[f.name] = {"parity_max_abs_diff": diff, "surgery": surgery,
                          "macs_before": _macs(f), "macs_after": after}
        pruned[f] = data
    report["written"] = not dry_run
    if not dry_run:
        _write(bundle, pruned, report)
        load_bundle(bundle)  # the engines' own verification, as the runtime will do it
    return report


def _write(bundle: Path, pruned: dict[Path, bytes], report: dict[str, Any]) -> None:
    """Replace the graphs, record the surgery, re-render the card, rehash what changed."""
    from engines.bundle import sha256_file
    from engines.modelcard import render_model_card

    mpath = bundle / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for f, data in pruned.items():
        tmp = f.with_name(f".{f.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(f)
    cmd = f"python -m benchmarks.prune_crop2 {bundle}"
    if cmd not in manifest.get("commands", []):
        manifest.setdefault("commands", []).append(cmd)
    manifest.setdefault("evaluation", {})["crop2_pruned"] = {
        "what": "crop 2's classifier removed from the exported graph (ONNX surgery, "
                "benchmarks/prune_crop2.py): Φ_cnn runs on crop 1 only, as the current "
                "export wrapper does; outputs unchanged",
        "frames": report["frames"], "tolerance": report["tolerance"],
        **{f.name: {"parity_max_abs_diff": report[f.name]["parity_max_abs_diff"],
                    "gmac_before": report[f.name]["macs_before"]["gmac"],
                    "gmac_after": report[f.name]["macs_after"]["gmac"]} for f in pruned}}
    def rehash(name: str) -> None:
        manifest["files"][name] = {"sha256": sha256_file(bundle / name),
                                   "bytes": (bundle / name).stat().st_size}

    for f in pruned:
        rehash(f.name)
    card = bundle / "MODEL_CARD.md"
    card.write_text(render_model_card(manifest))  # rendered from the manifest, as the export
    rehash(card.name)
    tmp = mpath.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(mpath)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prune_crop2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--dry-run", action="store_true", help="check parity, write nothing")
    a = p.parse_args(argv)
    try:
        report = prune_bundle(a.bundle, a.dry_run)
    except PruneError as exc:
        print(f"prune_crop2: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
