"""``pleura export RUN... --out BUNDLE``: trained runs -> a verified model bundle.

Writes ``frame.onnx`` (Reg-STN: frames -> probs, theta1, theta2; dynamic batch), one
``seg-<arch>.onnx`` per segmentation run plus its dropout-on ``seg-<arch>-mc.onnx``,
``aggregator.json`` (uninorm e of a video run), optionally ``frame-int8.onnx``
(:mod:`train.quantize`), ``manifest.json`` and ``MODEL_CARD.md``.

Every ONNX file passes ``onnx.checker`` and is compared with PyTorch through ONNX Runtime on
fresh random and simulated inputs; a max abs difference above 1e-4 on probabilities or theta
fails the export (nothing half-written is left looking valid: the manifest is written last).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.bundle import FRAME_OUTPUTS as BUNDLE_FRAME_OUTPUTS
from engines.bundle import OPSET, load_bundle, write_aggregator, write_manifest
from engines.modelcard import render_model_card
from engines.preprocess import FRAME_SPEC, SEG_SPEC, preprocess_batch
from train.calib_frames import random_frames, sample_frames, simulated_frames

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
FRAME_OUTPUTS = tuple(BUNDLE_FRAME_OUTPUTS)
"""The frame model's ONNX outputs in order: the bundle contract (engines.bundle.FRAME_OUTPUTS)."""


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model (or cannot be written)."""


# --- wrappers: what goes into the graph ----------------------------------------------------

class FrameExport(nn.Module):
    """Reg-STN -> (probs (B, 4), theta1 (B, 2, 3), theta2 (B, 2, 3)[, findings (B, F)]).

    Accepts models returning the training dict (``probs``/``logits``, ``theta1``, ``theta2``,
    optionally ``findings``) or a tuple already in that order. ``findings`` is exported (as a
    4th output) when ``with_findings``.
    """

    def __init__(self, model: nn.Module, with_findings: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_findings = with_findings

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if isinstance(out, Mapping):
            probs = out["probs"] if out.get("probs") is not None else out["logits"].softmax(1)
            head = (probs, out["theta1"], out["theta2"])
            return (*head, out["findings"]) if self.with_findings else head
        return tuple(out[:4] if self.with_findings else out[:3])


def has_findings(model: nn.Module) -> bool:
    """Whether a frame model's output dict carries a ``findings`` head."""
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(random_frames(2, 0)))
    return isinstance(out, Mapping) and out.get("findings") is not None


class SegExport(nn.Module):
    """Segmentation member -> softmax probabilities (B, 5, H, W)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(1)


class MCDropout(nn.Module):
    """Inverted dropout that stays on in eval mode and exports as ``RandomUniformLike``.

    y = x * 1[u >= p] / (1 - p), u ~ U(0, 1) per element (``channelwise``: per (B, C) map, as
    ``nn.Dropout2d``). ``nn.Dropout`` in train mode does not export as a sampling op that
    ONNX Runtime and TensorRT both run; this does (MC dropout, Gal & Ghahramani 2016).
    """

    def __init__(self, p: float, channelwise: bool = False) -> None:
        super().__init__()
        self.p, self.channelwise = float(p), channelwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ref = x[:, :, :1, :1] if self.channelwise and x.dim() == 4 else x
        keep = (torch.rand_like(ref) >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


def mc_variant(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with every dropout layer replaced by :class:`MCDropout`, or None
    if it has no dropout (then MC sampling is not available for it)."""
    twin = copy.deepcopy(model).eval()
    found = False
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout | nn.Dropout2d) and child.p > 0:
                setattr(parent, name, MCDropout(child.p, isinstance(child, nn.Dropout2d)))
                found = True
    return twin if found else None


# --- ONNX writing and checks ---------------------------------------------------------------

def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: Sequence[str]) -> Path:
    """torch -> ONNX (opset 17, dynamic batch), then ``onnx.checker``."""
    import onnx

    module = module.eval()
    dyn = {n: {0: "batch"} for n in (input_name, *output_names)}
    with torch.no_grad():
        torch.onnx.export(module, (example,), str(path), input_names=[input_name],
                          output_names=list(output_names), dynamic_axes=dyn,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def parity(module: nn.Module, onnx_path: Path, batches: Sequence[np.ndarray],
           names: Sequence[str], tol: float = TOLERANCE) -> dict[str, float]:
    """Max abs difference ONNX Runtime vs PyTorch per output over ``batches``.

    Raises:
        ExportError: any output differs by more than ``tol``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(names, 0.0)
    for x in batches:
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        for n, a, b in zip(names, ref, got, strict=True):
            worst[n] = max(worst[n], float(np.abs(a.numpy() - b).max()))
    bad = {n: d for n, d in worst.items() if d > tol}
    if bad:
        raise ExportError(f"{onnx_path.name}: ONNX Runtime differs from PyTorch by {bad} "
                          f"(> {tol}); the export is wrong, do not ship it")
    log.info("parity %s: %s", onnx_path.name, {n: f"{d:.2e}" for n, d in worst.items()})
    return worst


# --- the bundle ----------------------------------------------------------------------------

@dataclass
class SegRun:
    """One segmentation member to export."""

    name: str
    model: nn.Module
    arch: str = "?"
    meta: dict[str, Any] = field(default_factory=dict)


def export_bundle(out: str | Path, frame_model: nn.Module, seg: Sequence[SegRun] = (),
                  uninorm_e: Sequence[float] | None = None, *, batch: int = 2,
                  int8: bool = False, calib: str | Path | None = None,
                  eval_data: str | Path | None = None, training: Mapping[str, Any] | None = None,
                  commands: Sequence[str] = (), evaluation: Mapping[str, Any] | None = None,
                  name: str | None = None, seed: int = 0,
                  parity_data: str | Path | None = None, parity_frames: int = 32,
                  seg_from_bundle: str | Path | None = None,
                  finding_names: Sequence[str] = (), card: Mapping[str, Any] | None = None,
                  extra_files: Mapping[str, Path] | None = None,
                  seg_hidden_note: str | None = None,
                  ) -> dict[str, Any]:
    """Export models into a bundle folder, check parity, write manifest and model card.

    Args:
        out: bundle folder (created).
        frame_model: Reg-STN (dict or tuple outputs), any mode (put in eval here).
        seg: segmentation members.
        uninorm_e: 4 neutral elements, or None for no aggregator.
        batch: parity batch size.
        int8: also write ``frame-int8.onnx`` (calibrated on ``calib``), evaluated on
            ``eval_data``; made the CPU default only if F1 drops <= 1 point.
        parity_data: a dataset (e.g. data/sim-test) whose ``parity_frames`` frames are added
            to the frame model's parity check (the "reproduces the run" check).
        seg_from_bundle: copy this verified bundle's segmentation members (ONNX files and
            manifest entries, hashes checked on load) instead of exporting seg runs.
        finding_names: names of the frame model's findings head; non-empty exports the
            ``findings`` output (checked for parity like the others).
        card: model-card texts recorded in the manifest (``intended_use``, ``frame_model``,
            ``limitations``, ``licence``, ``research_only``, ``training_clips``).
        extra_files: name -> file copied into the bundle and hashed (e.g. the frame model's
            ``frame-weights.npz``, the warm start of ``pleura train real --init-from``).
        seg_hidden_note: the page hides the masks by default with this note
            (manifest ``models.seg_display``, :attr:`engines.bundle.Bundle.masks_shown`).

    Returns:
        The manifest written.
    """
    final = Path(out)
    # build beside the target and swap at the end: a failed export leaves the old bundle, and
    # a running worker never sees a half-written one
    out = final.parent / f".{final.name}.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sim = simulated_frames(batch, seed)
    fm = FrameExport(frame_model.eval(), with_findings=bool(finding_names))
    outputs = (*FRAME_OUTPUTS, "findings") if finding_names else FRAME_OUTPUTS
    frame_path = export_onnx(fm, torch.from_numpy(random_frames(batch, seed)),
                             out / "frame.onnx", "frames", outputs)
    xs = [random_frames(batch, seed + 1), preprocess_batch(sim, FRAME_SPEC)[0]]
    if parity_data is not None:
        test_x = sample_frames(parity_data, parity_frames, seed=3)[0]
        xs += [test_x[i:i + 8] for i in range(0, len(test_x), 8)]
    report: dict[str, Any] = {"frame.onnx": parity(fm, frame_path, xs, outputs)}
    report["inputs"] = (f"{batch} random + {batch} simulated frames"
                        + (f" + {sum(map(len, xs[2:]))} frames of {parity_data}"
                           if parity_data else "") + f"; tolerance {TOLERANCE}")
    members = []
    for s in seg:
        sm = SegExport(s.model.eval())
        fname = f"seg-{s.name}.onnx"
        ex = torch.from_numpy(preprocess_batch(sim, SEG_SPEC)[0])
        export_onnx(sm, ex, out / fname, "image", ["probs"])
        rnd = np.random.default_rng(seed + 2).uniform(-1, 1, tuple(ex.shape)).astype(np.float32)
        report[fname] = parity(sm, out / fname, [rnd, ex.numpy()], ["probs"])
        entry: dict[str, Any] = {"name": s.name, "arch": s.arch, "file": fname}
        twin = mc_variant(s.model)
        if twin is not None:
            mc_name = f"seg-{s.name}-mc.onnx"
            export_onnx(SegExport(twin), ex, out / mc_name, "image", ["probs"])
            report[mc_name] = check_mc(out / mc_name, ex.numpy())
            entry["mc_file"] = mc_name
        members.append(entry)
    if seg_from_bundle is not None:
        members += copy_seg_members(seg_from_bundle, out)
        report["segmentation"] = f"members copied from bundle {seg_from_bundle} (verified there)"
    for fname, src in (extra_files or {}).items():
        shutil.copyfile(src, out / fname)
    agg = None
    if uninorm_e is not None:
        write_aggregator(out, uninorm_e)
        agg = "aggregator.json"
    evaluation = dict(evaluation or {})
    evaluation["export_parity_max_abs_diff"] = report
    int8_file, cpu_default = None, None
    if int8:
        from train.quantize import quantize_and_compare

        q = quantize_and_compare(frame_path, out / "frame-int8.onnx", calib=calib,
                                 eval_data=eval_data)
        int8_file = "frame-int8.onnx"
        cpu_default = int8_file if q["int8_is_cpu_default"] else "frame.onnx"
        evaluation["int8"] = q
    kwargs = dict(frame_int8_file=int8_file, cpu_default=cpu_default, seg_members=members,
                  aggregator_file=agg, training=training, commands=commands,
                  evaluation=evaluation, name=name or final.name,
                  created_by="pleura export (train/export.py), pleura 0.1.0",
                  finding_names=list(finding_names), extra={"card": dict(card)} if card else None,
                  seg_display={"show": False, "note": seg_hidden_note} if seg_hidden_note
                  else None)
    manifest = write_manifest(out, **kwargs)
    (out / "MODEL_CARD.md").write_text(render_model_card(manifest))
    manifest = write_manifest(out, extra_files=["MODEL_CARD.md", *(extra_files or {})],
                              **kwargs)
    load_bundle(out)  # the engines' own verification, as the runtime will do it
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    out.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def copy_seg_members(bundle: str | Path, out: Path) -> list[dict[str, Any]]:
    """Copy a verified bundle's segmentation ONNX files into ``out``; their manifest entries."""
    b = load_bundle(bundle)  # hashes and schema checked
    entries = []
    for m in b.manifest["models"].get("seg") or []:
        entry = {k: m[k] for k in ("name", "arch", "file", "mc_file") if k in m}
        for key in ("file", "mc_file"):
            if key in entry:
                shutil.copyfile(b.path / entry[key], out / entry[key])
        entries.append(entry)
    if not entries:
        raise ExportError(f"{bundle}: has no segmentation members to copy")
    return entries


def check_mc(path: Path, x: np.ndarray) -> dict[str, float]:
    """The dropout-on variant must give valid softmax maps that differ between passes."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a, b = (s.run(None, {s.get_inputs()[0].name: x})[0] for _ in range(2))
    spread = float(np.abs(a - b).max())
    sum_err = float(np.abs(a.sum(1) - 1).max())
    if sum_err > 1e-4 or spread == 0.0:
        raise ExportError(f"{path.name}: MC-dropout variant is broken (softmax sum error "
                          f"{sum_err}, pass-to-pass spread {spread}); it must sample")
    return {"softmax_sum_err": sum_err, "pass_spread": spread}


# --- run folders and the CLI ---------------------------------------------------------------

def run_kind(path: Path) -> str:
    """``frame``, ``seg``, ``video`` or ``real`` (a ``pleura train real --final`` folder, with
    ``real_run.json``): from ``config.json``'s ``kind``, or the files present."""
    if (path / "real_run.json").is_file():
        return "real"
    cfg = path / "config.json"
    if cfg.is_file():
        conf = json.loads(cfg.read_text())
        kind = conf.get("kind")
        if kind in ("frame", "seg", "video"):
            return kind
        if kind is None and isinstance(conf.get("model"), str):  # train.frame.config layout
            return "frame"
    if (path / "uninorm.json").is_file():
        return "video"
    raise ExportError(f"{path}: cannot tell what run this is (no config.json 'kind' frame/seg/"
                      f"video, no uninorm.json); pass a folder written by `pleura train`")


def run_meta(path: Path) -> dict[str, Any]:
    """What a run folder records about itself: config, command, metrics (whatever exists)."""
    meta: dict[str, Any] = {"run": str(path)}
    cfg = path / "config.json"
    if cfg.is_file():
        meta["config"] = json.loads(cfg.read_text())
    for name in ("command.txt", "cmd.txt"):
        if (path / name).is_file():
            meta["command"] = (path / name).read_text().strip()
    if "command" not in meta and isinstance(meta.get("config"), dict):
        c = meta["config"].get("command") or meta["config"].get("argv")
        if c:
            meta["command"] = c if isinstance(c, str) else shlex.join(map(str, c))
    first = shlex.split(meta.get("command", "")) or [""]
    for kind in ("frame", "seg", "video"):  # `python .../train/seg/train_cli.py` -> pleura
        if first[0].endswith(f"train/{kind}/train_cli.py"):
            meta["command"] = shlex.join(["pleura", "train", kind, *first[1:]])
    if "command" not in meta and run_kind(path) == "frame":
        meta["command"] = reconstruct_command("train.frame.train_cli", "pleura train frame",
                                              meta["config"])
    for name in ("metrics.json", "eval.json", "test_metrics.json", "results.json"):
        if (path / name).is_file():
            meta.setdefault("metrics", {})[name] = json.loads((path / name).read_text())
    if "metrics" not in meta and isinstance(meta.get("config"), dict):
        best = meta["config"].get("best")
        if best:
            meta["metrics"] = {"best": best}
    return meta


def reconstruct_command(cli_module: str, prefix: str, config: Mapping[str, Any]) -> str:
    """The command line equivalent to a saved config: every key that is a flag of the CLI.

    For runs that save their options (``config.json``, ``synth.json``) but not their command.
    """
    import importlib

    p = argparse.ArgumentParser()
    importlib.import_module(cli_module).add_arguments(p)
    flags = {a.dest: a for a in p._actions if a.option_strings}
    parts = shlex.split(prefix)
    for key, v in config.items():
        a = flags.get(key)
        if a is None or v is None or v is False or (v == a.default and key != "out"):
            continue
        parts += [a.option_strings[0]] if v is True else [a.option_strings[0], str(v)]
    return shlex.join(parts)


def dataset_facts(root: str | Path) -> dict[str, Any]:
    """What a dataset folder says about itself (``synth.json``), and the command that made it."""
    f = Path(root) / "synth.json"
    if not f.is_file():
        return {"path": str(root)}
    synth = json.loads(f.read_text())
    cmd = reconstruct_command("train.synth.cli", "pleura synth",
                              {"out": str(root), **synth.get("config", {})})
    return {"path": str(root), "simulator_version": synth.get("synth_version"),
            "summary": synth.get("summary"), "command": cmd}


def _load_frame(path: Path) -> nn.Module:
    try:
        from train.frame.export_wrapper import FrameExportWrapper
        from train.frame.run import load_run
    except ImportError as exc:
        raise ExportError(f"frame runs need train.frame.run ({exc}); is the frame-scoring "
                          f"part installed?") from None
    return FrameExportWrapper(load_run(path)[0])


def _training_summary(metas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, meta in metas.items():
        cfg = meta.get("config") or {}
        data = cfg.get("data") or cfg.get("dataset") or (cfg.get("train") or {}).get("data")
        out[f"{role}_run"] = meta["run"]
        if role == "frame" and isinstance(cfg.get("model"), str):
            out["frame_model"] = cfg["model"]
        if isinstance(data, str):
            out[f"{role}_data"] = dataset_facts(data)
        elif data:
            out[f"{role}_data"] = data
    out["licences"] = ("simulated data from `pleura synth` (made by this project); real clips, "
                       "if any, only with commercial_use=yes in ../shared/data/pocus/MANIFEST.csv")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run folders: one frame run (required), seg runs, a video run "
                             "(kind read from each folder's config.json / uninorm.json)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument("--int8", action="store_true",
                        help="also write frame-int8.onnx (ONNX Runtime static int8, QDQ)")
    parser.add_argument("--calib", type=Path, default=Path("data/sim-train"),
                        help="dataset whose frames calibrate int8 (default data/sim-train)")
    parser.add_argument("--eval-data", type=Path, default=Path("data/sim-test"),
                        help="dataset for the int8 F1 check (default data/sim-test)")
    parser.add_argument("--name", default=None, help="bundle name (default: folder name)")
    parser.add_argument("--parity-data", type=Path, default=None,
                        help="also check frame parity on frames of this dataset "
                             "(e.g. data/sim-test)")
    parser.add_argument("--parity-frames", type=int, default=32)
    parser.add_argument("--command", action="append", default=[], metavar="TEXT",
                        help="an exact command that made the inputs (repeatable; recorded in "
                             "the manifest and model card before the runs' own commands)")
    parser.add_argument("--metrics", action="append", default=[], metavar="NAME=FILE.json",
                        help="evaluation figures to record under NAME (repeatable)")
    parser.add_argument("--training-note", action="append", default=[], metavar="KEY=TEXT",
                        help="training data / licence facts to record (repeatable)")
    parser.add_argument("--seg-hidden-note", default=None, metavar="TEXT",
                        help="the page hides the segmentation mask by default and says TEXT "
                             "(masks not meaningful on this bundle's images)")
    parser.add_argument("--seg-from-bundle", type=Path, default=None, metavar="BUNDLE",
                        help="copy the segmentation members of this bundle (when no seg run "
                             "is given; e.g. engines/bundles/default)")


def run(args: argparse.Namespace) -> int:
    frame, seg, video = None, [], None
    metas: dict[str, dict[str, Any]] = {}
    for path in args.runs:
        kind = run_kind(path)
        meta = run_meta(path)
        if kind in ("frame", "real"):
            if frame is not None:
                raise ExportError(f"two frame runs given ({frame} and {path}); pass one")
            frame, metas["frame"] = path, meta
        elif kind == "seg":
            seg.append(path)
            metas[f"seg_{len(seg)}"] = meta
        else:
            video, metas["video"] = path, meta
    if frame is None:
        raise ExportError("no frame run among RUN...; pass the folder of `pleura train frame` "
                          "or `pleura train real --final`")
    real = json.loads((frame / "real_run.json").read_text()) if run_kind(frame) == "real" \
        else None
    members = []
    for path in seg:
        from train.seg.run import load_run as load_seg

        model, cfg = load_seg(path)
        arch = cfg["model"]["arch"]
        members.append(SegRun(arch if arch not in [m.name for m in members]
                              else f"{arch}{len(members)}", model, arch))
    e = real["uninorm_e"] if real else None
    if video is not None:
        e = json.loads((video / "uninorm.json").read_text())["e"]
    training = _training_summary(metas)
    real_kw: dict[str, Any] = {}
    if real:
        from train.real.export import real_export_args

        real_kw = real_export_args(frame, real, training)
    test_data = args.parity_data or (args.eval_data if args.int8 else None)
    if test_data is not None:
        training["test_data"] = dataset_facts(test_data)
    data_cmds = [v["command"] for v in training.values() if isinstance(v, dict) and "command" in v]
    commands = list(dict.fromkeys([*args.command, *data_cmds,
                                   *(m["command"] for m in metas.values() if m.get("command"))]))
    if "export" in sys.argv[1:3]:  # the exact command line, as typed
        cmd = ["pleura", *sys.argv[sys.argv.index("export"):]]
    else:
        cmd = ["pleura", "export", *map(str, args.runs), "--out", str(args.out)]
        cmd += ["--int8"] if args.int8 else []
    commands.append(shlex.join(cmd))
    evaluation = {role: m["metrics"] for role, m in metas.items() if m.get("metrics")}
    for item in args.metrics:
        key, _, file = item.partition("=")
        if not file or not Path(file).is_file():
            raise ExportError(f"--metrics {item!r}: expected NAME=FILE.json with an existing file")
        evaluation[key] = json.loads(Path(file).read_text())
    for item in args.training_note:
        key, _, text = item.partition("=")
        training[key] = text
    model = real_kw.pop("model") if real else _load_frame(frame)
    manifest = export_bundle(args.out, model, members, e, int8=args.int8,
                             calib=args.calib, eval_data=args.eval_data,
                             training=training, commands=commands,
                             evaluation=evaluation, name=args.name,
                             parity_data=args.parity_data, parity_frames=args.parity_frames,
                             seg_from_bundle=args.seg_from_bundle,
                             seg_hidden_note=args.seg_hidden_note, **real_kw)
    print(f"wrote bundle {args.out} ({', '.join(manifest['files'])})")
    return 0
