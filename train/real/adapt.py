"""``pleura adapt BUNDLE --clips SITE/ --out NEW``: adapt a real-scan bundle to a new site from
its **unlabelled** clips (issue #25 section 3).

Two parts, nothing else changes (``--parts``, default ``prior``: under leave-one-source-out
the prior lifted the pooled video weighted F1 from 0.562 to 0.635, while re-estimated
batch-norm statistics dropped it to 0.370 — ``docs/results/real.md``):

- **score prior** (label shift): the site's share of each score is re-estimated by EM from the
  model's own frame posteriors (Saerens, Latinne & Decaestecker, "Adjusting the outputs of a
  classifier to new a priori probabilities", Neural Computation 14(1), 2002): with ``w = π_site /
  π_train``, posteriors ``q ∝ p · w``, ``π_site = mean(q)`` until it settles. Every clip weighs
  one (its frames share the clip's weight). The frame model's eval-mode logit adjustment
  (:func:`train.real.model.set_prior`) then carries ``π_site`` instead of the training prior,
  smoothed as the training prior is (add one clip per score);
- **batch-norm statistics** (AdaBN, Li et al. 2018): the running mean and variance of every
  batch-norm layer are re-estimated on the site's frames (weights untouched).

The adapted network is exported by the one export path (:func:`train.export.export_bundle`:
parity, manifest hashes, model card); the segmentation members, the uninorm aggregator and the
preprocessing are the source bundle's. The card says what was adapted, on which clips, and the
prior before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("prior", "bn")


class AdaptError(ValueError):
    """A bundle or a clip folder that cannot be adapted; the message says why."""


# --------------------------------------------------------------------------- EM label shift


def em_prior(frame_probs: Sequence[np.ndarray], train_prior: np.ndarray, iters: int = 200,
             tol: float = 1e-7) -> tuple[np.ndarray, int]:
    """Saerens et al. EM: the new prior from posteriors computed under ``train_prior``.

    Args:
        frame_probs: per clip, (N_i, C) frame posteriors under the training prior.
        train_prior: (C,) the prior those posteriors assume.

    Returns:
        (the estimated prior (C,), iterations run).
    """
    pi_t = np.asarray(train_prior, dtype=np.float64)
    pi_t = pi_t / pi_t.sum()
    clips = [np.asarray(p, dtype=np.float64) for p in frame_probs if len(p)]
    if not clips:
        raise AdaptError("no frames to estimate a prior from")
    weights = np.concatenate([np.full(len(p), 1.0 / len(p)) for p in clips])
    weights /= weights.sum()
    P = np.concatenate(clips)
    pi = pi_t.copy()
    for it in range(1, iters + 1):
        q = P * (pi / pi_t)[None]
        q /= q.sum(axis=1, keepdims=True)
        new = weights @ q
        if np.abs(new - pi).max() < tol:
            return new, it
        pi = new
    return pi, iters


def smoothed_adjustment(prior: np.ndarray, n_clips: int) -> np.ndarray:
    """Logit adjustment ``log π − log(1/C)`` of a prior estimated from ``n_clips`` clips,
    smoothed like the training prior (:func:`train.real.model.prior_adjustment`: one clip
    added to each score)."""
    from train.real.model import prior_adjustment

    return prior_adjustment(np.asarray(prior) * n_clips).numpy()


# --------------------------------------------------------------------------- the model


def model_from_bundle(bundle) -> tuple[Any, dict[str, Any]]:
    """The bundle's real-scan frame model in PyTorch, from its ``frame-weights.npz``, checked
    against its ``frame.onnx`` (≤ 1e-4 on random and simulated frames).

    Width and findings head come from the array shapes; the input normalisation is the one of
    the two (``frame``, ``none``) whose outputs match the ONNX model.

    Raises:
        AdaptError: no ``frame-weights.npz`` (not a real-scan bundle), or no match.
    """
    import torch

    from engines import create_engine
    from train.calib_frames import random_frames
    from train.real.fit import model_from_weights

    weights = Path(bundle.path) / "frame-weights.npz"
    if not weights.is_file():
        raise AdaptError(f"{bundle.path}: no frame-weights.npz; pleura adapt works on real-scan "
                         "bundles (pleura train real --final, then pleura export)")
    x = random_frames(4, 0)
    want = create_engine(bundle, "onnxruntime").frame(x).probs
    for norm in ("frame", "none"):
        try:
            model = model_from_weights(weights, norm).eval()
        except ValueError as exc:
            raise AdaptError(f"{bundle.path}: {exc}") from None
        with torch.no_grad():
            got = model(torch.from_numpy(x))["probs"].numpy()
        diff = float(np.abs(got - want).max())
        if diff <= 1e-4:
            return model, {"norm": norm, "width": model.width, "n_findings": model.n_findings,
                           "parity_max_abs_diff": diff}
    raise AdaptError(f"{bundle.path}: frame-weights.npz does not reproduce frame.onnx with "
                     "either input normalisation; the bundle is inconsistent")


def train_prior(model) -> np.ndarray:
    """The prior the model's eval-mode outputs assume: ``softmax(logit_adjust)``."""
    a = model.logit_adjust.detach().numpy().astype(np.float64)
    p = np.exp(a - a.max())
    return p / p.sum()


def adapt_batchnorm(model, clips: Sequence[np.ndarray], batch: int = 64) -> int:
    """Re-estimate every batch-norm layer's running statistics on ``clips`` (each (N, H, W)
    uint8 letterboxed frames; cumulative average, weights untouched); returns frames seen."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over every batch
        m.train()
    frames = np.concatenate([c for c in clips if len(c)])
    n = 0
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(frames[i:i + batch].astype(np.float32) / 255.0)
            if len(x) < 2:
                continue  # a batch of one has no variance
            model(x[:, None].expand(-1, 3, -1, -1))
            n += len(x)
    model.eval()
    return n


def adapt_model(model, clips: Sequence[np.ndarray], parts: Sequence[str] = PARTS
                ) -> dict[str, Any]:
    """Adapt ``model`` in place to the site whose frames are ``clips``; what changed."""
    import torch

    from train.real.fit import predict

    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise AdaptError(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    report: dict[str, Any] = {"parts": list(parts), "n_clips": len(clips),
                              "n_frames": int(sum(len(c) for c in clips))}
    if "bn" in parts:
        report["bn_frames"] = adapt_batchnorm(model, clips)
    if "prior" in parts:
        before = train_prior(model)
        probs = [predict(model, c)[0] for c in clips if len(c)]
        prior, iters = em_prior(probs, before)
        adj = smoothed_adjustment(prior, len(probs))
        model.logit_adjust.copy_(torch.as_tensor(adj, dtype=torch.float32))
        report.update(prior_before=before.round(4).tolist(), prior_em=prior.round(4).tolist(),
                      prior_after=train_prior(model).round(4).tolist(), em_iterations=iters)
    return report


# --------------------------------------------------------------------------- the command


def site_clips(folder: Path) -> list[Path]:
    """The clips of a site folder: videos, DICOM files and folders of frames, sorted."""
    from stream.exam.naming import is_clip_candidate
    from stream.score_clips import VIDEO_SUFFIXES

    if not folder.is_dir():
        raise AdaptError(f"--clips {folder}: not a folder")
    found = sorted(p for p in folder.iterdir() if is_clip_candidate(p, VIDEO_SUFFIXES))
    if not found:
        raise AdaptError(f"--clips {folder}: no clip (video, DICOM or folder of frames)")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Adapt a real-scan bundle to a new site from its unlabelled clips: "
                          "re-estimate the score prior (EM, Saerens et al. 2002) and the "
                          "batch-norm statistics; write a new bundle.")
    parser.add_argument("bundle", help="the bundle to adapt (a real-scan bundle)")
    parser.add_argument("--clips", required=True, help="folder of the site's clips (no labels)")
    parser.add_argument("--out", required=True, help="the new bundle folder")
    parser.add_argument("--parts", default="prior",
                        help="what to adapt, comma-separated: prior (default), bn. Measured "
                        "under leave-one-source-out (docs/results/real.md): the prior helps, "
                        "batch-norm statistics from one site's clips hurt (weighted F1 0.56 -> "
                        "0.37), so bn is off unless asked for")
    parser.add_argument("--max-frames", type=int, default=64,
                        help="frames per clip, evenly spaced (as in training)")
    parser.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache of decoded frames (default: the user cache; '' = none)")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from engines.bundle import BundleError, load_bundle
    from train.export import export_bundle
    from train.real.fit import save_weights
    from train.real.frames import default_cache_dir, load_clip

    try:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        if not parts or set(parts) - set(PARTS):
            raise AdaptError(f"--parts {args.parts!r}: unknown part(s) "
                             f"{sorted(set(parts) - set(PARTS))}; choose from "
                             f"{', '.join(PARTS)}")
        bundle = load_bundle(args.bundle)
        model, rebuilt = model_from_bundle(bundle)
        paths = site_clips(Path(args.clips))
        if Path(args.out).resolve() == bundle.path.resolve():
            raise AdaptError("--out is the bundle being adapted; write a new bundle")
        cache = default_cache_dir() if args.cache_dir is None else (args.cache_dir or None)
        frames, used, skipped = [], [], []
        for p in paths:
            try:
                frames.append(load_clip(p, cache, max_frames=args.max_frames).images)
                used.append(p.name)
            except (OSError, ValueError) as exc:
                skipped.append(f"{p.name}: {exc}")
        for s in skipped:
            print(f"SKIPPED {s}", file=sys.stderr)
        if not frames:
            raise AdaptError(f"--clips {args.clips}: no clip could be decoded")
        report = adapt_model(model, frames, parts)
    except (AdaptError, BundleError) as exc:
        print(f"pleura adapt: {exc}", file=sys.stderr)
        return 2
    report.update(clips=used, skipped=len(skipped), source_bundle=bundle.name, rebuilt=rebuilt)
    m = bundle.manifest
    card = dict(m.get("card") or {})
    what = []
    if "prior" in report["parts"]:
        what.append(f"score prior re-estimated by EM (Saerens et al. 2002) from "
                    f"{report['prior_before']} to {report['prior_after']}")
    if "bn" in report["parts"]:
        what.append(f"batch-norm statistics re-estimated on {report['bn_frames']} frames")
    note = (f"Adapted from bundle {bundle.name} with pleura adapt on {len(used)} unlabelled "
            f"clips of {Path(args.clips).name} ({report['n_frames']} frames): "
            + "; ".join(what) + ". No weight was trained; scores on other sites follow the "
            "adapted prior.")
    card["limitations"] = [*card.get("limitations", []), note]
    card["frame_model"] = f"{card.get('frame_model', 'real-scan frame model')} (adapted: " \
                          f"{', '.join(report['parts'])})"
    training = dict(m.get("training") or {})
    training["adaptation"] = note
    shown, hidden_note = bundle.masks_shown
    cmd = "pleura adapt " + " ".join(sys.argv[sys.argv.index("adapt") + 1:]) \
        if "adapt" in sys.argv else f"pleura adapt {args.bundle} --clips {args.clips} " \
        f"--out {args.out} --parts {args.parts}"
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="pleura-adapt-") as tmp:
        weights = save_weights(model, Path(tmp) / "frame-weights.npz")
        manifest = export_bundle(
            out, model, (), bundle.uninorm_e, training=training,
            commands=[*m.get("commands", []), cmd],
            evaluation={"adaptation": report,
                        "source_bundle_evaluation": "not carried over: it measured the "
                        f"unadapted model (see bundle {bundle.name})"},
            name=args.name, seg_from_bundle=bundle.path if bundle.seg_members else None,
            finding_names=bundle.finding_names, card=card,
            extra_files={"frame-weights.npz": weights},
            seg_hidden_note=None if shown else hidden_note)
    print(json.dumps({k: report[k] for k in report if k not in ("clips", "rebuilt")}, indent=1))
    print(f"wrote bundle {out} ({', '.join(manifest['files'])})")
    return 0
