"""Rebuild a bundle's own network, with the bundle's own weights, in PyTorch (issue #28).

The PyTorch baselines of ``pleura bench`` must run *the bundle's* model, or a ratio against
them compares two networks. This module (imported only inside the baseline children: it needs
torch and ``train/``) turns a bundle back into a torch module:

- **weights shipped in the bundle**: a real-scan bundle (``pleura train real`` → ``pleura
  export``) carries ``frame-weights.npz``, the state dict of its
  :class:`train.real.model.RealFrameNet`; the width and the findings head are read from the
  array shapes, the input normalisation from the manifest's ``training.frame_model`` text;
- **a trained run** (``--baseline-run``): :func:`train.frame.run.load_run`;
- **otherwise, the ONNX graph's initializers**: the manifest's ``training.frame_model`` (or
  ``--baseline-model``) names the :mod:`train.frame.models` registry entry; its Conv2d /
  Linear / BatchNorm layers, in the order the forward runs them, are matched one to one with
  the graph's Conv / Gemm / BatchNormalization nodes (graph order), shapes checked. The
  exporter folds each BatchNorm2d into the preceding convolution, so such a convolution gets
  the folded weight and bias and its BatchNorm the identity statistics (γ = 1, β = 0, μ = 0,
  σ² = 1 − ε): the same function, the same layers executed. A parameter that cannot be
  placed refuses the rebuild (:class:`CannotRebuildError`) with its name.

Which forward: the exporter's (:class:`train.export.FrameExport` around
:class:`train.frame.export_wrapper.FrameExportWrapper`, crop 1's classifier only) or, for
bundles exported before that wrapper pruned crop 2, the model's own forward (both crops): the
one whose multiply-accumulates match the bundle graph's (``target_macs``). The caller still
checks parity (outputs vs ONNX Runtime ≤ 1e-4) and MACs (within 1 %) before any ratio
(:mod:`benchmarks.same_model`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NO_RATIO = "cannot rebuild this bundle's network in PyTorch; no ratio"


class CannotRebuildError(RuntimeError):
    """The bundle's network cannot be rebuilt in PyTorch (the message says why)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"{NO_RATIO} ({why})")

    @classmethod
    def from_message(cls, message: str) -> CannotRebuildError:
        """The error as a child reported it (its message already carries :data:`NO_RATIO`)."""
        err = cls.__new__(cls)
        RuntimeError.__init__(err, message)
        return err


# --------------------------------------------------------------------------- MACs

def count_macs(model, torch, x) -> int:
    """Multiply-accumulates of one forward, per input row, counted with hooks on Conv2d and
    Linear (every call: a module run twice counts twice)."""
    total = [0]

    def conv_hook(m, _inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += out.numel() * k

    def lin_hook(m, _inp, out):
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0] // x.shape[0]


# --------------------------------------------------------------------------- ONNX -> torch

def _graph(onnx_path: Path) -> tuple[list, dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(onnx_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:  # the exporter shares equal tensors (e.g. zero-initialised heads)
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    return list(g.node), inits


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _execution_order(module, torch, example) -> list[tuple[str, Any]]:
    """(name, module) of every Conv2d / Linear / BatchNorm, in the order the forward first
    calls them."""
    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    order: list[tuple[str, Any]] = []
    seen: set[int] = set()
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, kinds):
            def hook(mod, _i, _o, name=name):
                if id(mod) not in seen:
                    seen.add(id(mod))
                    order.append((name, mod))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return order


def _init(inits: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in inits:
        raise CannotRebuildError(f"{what}: input {name!r} is computed in the graph, not a weight")
    return inits[name]


def _set(torch, param, value: np.ndarray, what: str) -> None:
    if param is None or tuple(param.shape) != tuple(value.shape):
        raise CannotRebuildError(f"{what}: shape {None if param is None else tuple(param.shape)} "
                            f"in PyTorch, {tuple(value.shape)} in the graph")
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.array(value, np.float32)))  # a writable copy


def _neutral_bn(torch, bn) -> None:
    """BatchNorm whose statistics make it the identity (its conv carries the folded values)."""
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


def _load_conv(torch, conv, node, inits, name: str) -> None:
    w = _init(inits, node.input[1], name)
    _set(torch, conv.weight, w, f"{name}.weight")
    if len(node.input) > 2 and node.input[2]:
        b = _init(inits, node.input[2], name)
        if conv.bias is None:  # a bias-free conv followed by a folded BatchNorm
            conv.bias = torch.nn.Parameter(torch.zeros(conv.out_channels))
        _set(torch, conv.bias, b, f"{name}.bias")
    elif conv.bias is not None:
        with torch.no_grad():
            conv.bias.zero_()
    for key, want in (("strides", list(conv.stride)), ("dilations", list(conv.dilation)),
                      ("group", conv.groups)):
        got = _attr(node, key)
        if got is not None and list(np.atleast_1d(got)) != list(np.atleast_1d(want)):
            raise CannotRebuildError(f"{name}: {key} {got} in the graph, {want} in PyTorch")


def _load_gemm(torch, lin, node, inits, name: str) -> None:
    if (_attr(node, "alpha", 1.0), _attr(node, "beta", 1.0), _attr(node, "transA", 0)) != \
            (1.0, 1.0, 0):
        raise CannotRebuildError(f"{name}: Gemm with alpha/beta/transA other than 1/1/0")
    w = _init(inits, node.input[1], name)
    _set(torch, lin.weight, w if _attr(node, "transB", 0) else w.T, f"{name}.weight")
    if lin.bias is not None:
        _set(torch, lin.bias, _init(inits, node.input[2], name), f"{name}.bias")


def _load_bn(torch, bn, node, inits, name: str) -> None:
    for param, inp in zip(("weight", "bias", "running_mean", "running_var"), node.input[1:5],
                          strict=True):
        _set(torch, getattr(bn, param), _init(inits, inp, name), f"{name}.{param}")
    if abs(_attr(node, "epsilon", 1e-5) - bn.eps) > 1e-12:
        raise CannotRebuildError(f"{name}: epsilon {_attr(node, 'epsilon')} in the graph, "
                            f"{bn.eps} in PyTorch")


FOLDED: dict[str, Callable[[list, dict[str, np.ndarray]], list[np.ndarray]]] = {
    # EvidenceTranslation.log_beta (2,): the exporter constant-folds log_beta[k] into one
    # scalar initializer per crop, each feeding an Exp node of the evidence head
    "log_beta": lambda nodes, inits: [inits[n.input[0]] for n in nodes
                                      if n.op_type == "Exp" and "/evidence/" in n.name
                                      and n.input[0] in inits],
}
"""Parameter name (last component) -> its values recovered from the graph, in order."""


def load_onnx_weights(module, torch, onnx_path: Path, example) -> dict[str, Any]:
    """Set every parameter of ``module`` from ``onnx_path``'s initializers (module docstring).

    Returns:
        {"layers": matched layers, "folded_batchnorms": BatchNorm2d folded into convs}.

    Raises:
        CannotRebuildError: a layer or parameter has no counterpart in the graph.
    """
    nodes, inits = _graph(onnx_path)
    graph_layers = [n for n in nodes if n.op_type in ("Conv", "Gemm", "BatchNormalization")]
    order = _execution_order(module, torch, example)
    assigned: set[str] = set()
    k, folded, prev = 0, 0, None
    for name, m in order:
        node = graph_layers[k] if k < len(graph_layers) else None
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            if node is not None and node.op_type == "BatchNormalization":
                _load_bn(torch, m, node, inits, name)
                k += 1
            elif isinstance(prev, torch.nn.Conv2d):
                _neutral_bn(torch, m)  # folded into the conv just loaded
                folded += 1
            else:
                raise CannotRebuildError(f"{name}: no BatchNormalization in the graph for it")
        elif node is None:
            raise CannotRebuildError(f"{name}: the graph has fewer layers than the PyTorch model")
        elif isinstance(m, torch.nn.Conv2d) and node.op_type == "Conv":
            _load_conv(torch, m, node, inits, name)
            k += 1
        elif isinstance(m, torch.nn.Linear) and node.op_type == "Gemm":
            _load_gemm(torch, m, node, inits, name)
            k += 1
        else:
            raise CannotRebuildError(f"{name} ({type(m).__name__}) meets graph node {node.name} "
                                f"({node.op_type}): different layer order")
        assigned |= {f"{name}.{p}" for p, _ in m.named_parameters(recurse=False)}
        assigned |= {f"{name}.{b}" for b, _ in m.named_buffers(recurse=False)}
        prev = m
    if k != len(graph_layers):
        raise CannotRebuildError(f"the graph has {len(graph_layers) - k} more Conv/Gemm/"
                            f"BatchNormalization nodes than the PyTorch model runs")
    state = module.state_dict()
    for key in state:
        if key in assigned or key.endswith("num_batches_tracked"):
            continue
        named = next((n for n in inits if n == key or n.endswith("." + key)), None)
        leaf = key.rsplit(".", 1)[-1]
        if named is not None:
            _set(torch, state[key], inits[named], key)
        elif leaf in FOLDED and FOLDED[leaf](nodes, inits):
            vals = np.asarray(FOLDED[leaf](nodes, inits), np.float32).reshape(state[key].shape)
            _set(torch, state[key], vals, key)
        else:
            raise CannotRebuildError(f"parameter {key} is not in {onnx_path.name}")
        assigned.add(key)
    return {"layers": k, "folded_batchnorms": folded}


# --------------------------------------------------------------------------- frame networks

def _real_frame_net(bundle: Path, manifest: dict[str, Any], torch):
    """The real-scan CNN from the bundle's ``frame-weights.npz``."""
    from train.real.fit import model_from_weights

    path = bundle / "frame-weights.npz"
    text = str((manifest.get("training") or {}).get("frame_model", ""))
    norm = re.search(r"norm '(\w+)'", text)
    try:
        model = model_from_weights(path, norm.group(1) if norm else "frame")
    except ValueError as exc:
        raise CannotRebuildError(str(exc)) from None
    how = (f"train.real.model.RealFrameNet(width={model.width:g}, norm={model.norm!r}, "
           f"findings={model.n_findings}) with the bundle's {path.name}")
    return model, how


def _variants(model, with_findings: bool) -> dict[str, Any]:
    """The exported forward (crop 1 only for Reg-STN) and the model's own (as trained)."""
    from train.export import FrameExport
    from train.frame.export_wrapper import FrameExportWrapper
    from train.frame.models.stn import RegSTN

    if not isinstance(model, RegSTN):
        return {"model forward (as exported)": FrameExport(model, with_findings)}
    return {"export wrapper, crop 1 classified (train/frame/export_wrapper.py)":
            FrameExport(FrameExportWrapper(model), with_findings),
            "model forward, both crops classified (as exported before the crop-1-only "
            "wrapper)": FrameExport(model, with_findings)}


def frame_network(bundle: Path, shape: tuple[int, int, int], *, run_dir: str | None = None,
                  model_name: str | None = None, target_macs: int | None = None):
    """The bundle's frame network in eval mode, returning the graph's outputs in order.

    Args:
        bundle: the bundle folder.
        shape: (C, H, W) of one input.
        run_dir: a trained frame run to load instead of the bundle's weights.
        model_name: registry name when the manifest names none (``--baseline-model``).
        target_macs: the bundle graph's executed MACs per frame: picks the forward variant.

    Returns:
        (module, {"model": where it came from, "forward": which forward, "macs": per frame}).

    Raises:
        CannotRebuildError: why not.
    """
    import json

    import torch

    from train.frame.models.registry import MODELS, build_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    frame = manifest["models"]["frame"]
    onnx_path = bundle / frame["file"]
    with_findings = bool(frame.get("finding_names"))
    named = str((manifest.get("training") or {}).get("frame_model") or "")
    torch.manual_seed(0)
    if run_dir:
        from train.frame.run import load_run

        try:
            model, _cfg = load_run(run_dir)
        except (FileNotFoundError, KeyError, RuntimeError) as exc:
            raise CannotRebuildError(f"run {run_dir} not loadable: {exc}") from exc
        how = f"trained run {run_dir}"
    elif (bundle / "frame-weights.npz").is_file():
        model, how = _real_frame_net(bundle, manifest, torch)
    else:
        name = named if named in MODELS else model_name
        if not name:
            raise CannotRebuildError(f"the manifest names no train.frame.models network "
                                f"(training.frame_model {named or 'absent'!r}) and no weights "
                                f"file; pass --baseline-model NAME if you know it")
        try:
            model = build_model(name).eval()
        except KeyError as exc:
            raise CannotRebuildError(str(exc)) from exc
        load_onnx_weights(model, torch, onnx_path, torch.rand(1, *shape))
        how = (f"train.frame.models.registry.build_model({name!r}) with the weights of "
               f"{bundle.name}/{onnx_path.name} (initializers; BatchNorm folded into its conv)")
    model.eval()
    x = torch.rand(1, *shape)
    options = {k: (m.eval(), count_macs(m.eval(), torch, x))
               for k, m in _variants(model, with_findings).items()}
    pick = min(options, key=lambda k: abs(options[k][1] - target_macs)) if target_macs \
        else next(iter(options))
    module, macs = options[pick]
    return module, {"model": how, "forward": pick, "macs_per_frame": macs,
                    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}


def seg_network(onnx_path: Path, arch: str, shape: tuple[int, int, int]):
    """A segmentation member (``train.seg.models``) with the weights of its ONNX file."""
    import torch

    from train.seg.models import build_model

    try:
        model = build_model(arch).eval()
    except ValueError as exc:
        raise CannotRebuildError(str(exc)) from exc
    load_onnx_weights(model, torch, Path(onnx_path), torch.rand(1, *shape))
    return model, {"model": f"train.seg.models.build_model({arch!r}) with the weights of "
                            f"{Path(onnx_path).name} (initializers; BatchNorm folded)",
                   "forward": "model forward, softmax",
                   "macs_per_frame": count_macs(model, torch, torch.rand(1, *shape)),
                   "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}
