"""Backend-independent pieces: input checks, output packing, ensemble and MC-dropout maths.

A backend only has to run one ONNX model on one batch (``run(model_file, x) -> outputs``);
everything else an :class:`~engines.base.Engine` does is here, so ONNX Runtime and TensorRT
cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engines.base import Engine, FrameOutput, SegOutput
from engines.bundle import Bundle, SegMember
from engines.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

RunFn = Callable[[Path, np.ndarray], Sequence[np.ndarray]]
"""Runs one model file on a (B, C, H, W) float32 batch; returns its outputs in graph order."""

MC_CHUNK = 16
"""Stochastic passes per backend call (MC batch = MC_CHUNK x B), bounding peak memory."""


def check_input(x: np.ndarray, spec: PreprocessSpec, what: str) -> np.ndarray:
    """Validate a preprocessed batch against a spec; return it as contiguous float32.

    Raises:
        ValueError: wrong rank or shape, naming what was expected and how to make it.
    """
    x = np.asarray(x)
    want = (spec.channels, spec.height, spec.width)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != want or x.shape[0] == 0:
        raise ValueError(
            f"{what} input must be (B, {want[0]}, {want[1]}, {want[2]}) float32, got "
            f"{x.shape}; make it with engines.preprocess.preprocess_batch(frames, "
            f"bundle.{'frame' if what == 'frame' else 'seg'}_spec)")
    return np.ascontiguousarray(x, dtype=np.float32)


def pack_frame(outputs: Sequence[np.ndarray], names: Sequence[str]) -> FrameOutput:
    """Map a frame model's outputs (by output name) onto :class:`FrameOutput`."""
    by_name = dict(zip(names, outputs, strict=True))
    try:
        probs, t1, t2 = by_name["probs"], by_name["theta1"], by_name["theta2"]
    except KeyError:
        raise ValueError(f"frame model outputs must be named probs, theta1, theta2; got "
                         f"{list(names)}; re-export the bundle with `pleura export`") from None
    b = probs.shape[0]
    findings = by_name.get("findings")
    return FrameOutput(probs=np.asarray(probs, np.float32).reshape(b, -1),
                       theta1=np.asarray(t1, np.float32).reshape(b, 2, 3),
                       theta2=np.asarray(t2, np.float32).reshape(b, 2, 3),
                       findings=None if findings is None
                       else np.asarray(findings, np.float32).reshape(b, -1))


def mc_statistics(samples: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-pixel MC-dropout uncertainty (Roy et al. 2020, section 3; Gal & Ghahramani 2016).

    std(x) = sqrt(1/N sum_n (p_n[c*(x)](x) - mean_n p_n[c*(x)](x))^2), with
    c*(x) = argmax_c mean[c](x): the spread, over the N stochastic passes, of the probability
    of the finally predicted class.

    Args:
        samples: (N, B, C, H, W) softmax outputs of N dropout-on passes.
        mean: (B, C, H, W) the final (ensemble) probabilities that pick c*.

    Returns:
        (B, H, W) float32 standard deviation.
    """
    idx = mean.argmax(axis=1)[None, :, None]  # (1, B, 1, H, W)
    p = np.take_along_axis(samples, np.broadcast_to(idx, (samples.shape[0], *idx.shape[1:])),
                           axis=2)[:, :, 0]  # (N, B, H, W)
    return p.std(axis=0).astype(np.float32)


def segment_ensemble(run: RunFn, members: Sequence[SegMember], x: np.ndarray,
                     mc_samples: int = 0) -> SegOutput:
    """Ensemble segmentation with optional MC dropout.

    probs = (1/M) sum_m P_m, the unweighted mean of the members' softmax (Roy et al. 2020,
    section 3); with ``mc_samples`` = N > 0, P_m of a member with a dropout-on variant is the
    mean of N stochastic passes, and ``std`` is :func:`mc_statistics` over the passes of all
    such members.

    Args:
        run: backend runner.
        members: the bundle's segmentation members (at least one).
        x: (B, 1, H, W) float32 preprocessed with the bundle's seg spec.
        mc_samples: N stochastic passes per member, 0 for none.
    """
    if not members:
        raise NotImplementedError("this bundle has no segmentation model; export one with "
                                  "`pleura export FRAME_RUN --seg SEG_RUN --out DIR`")
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    b = x.shape[0]
    means, pooled = [], []
    for m in members:
        if mc_samples and m.mc_file is not None:
            chunks = []
            for start in range(0, mc_samples, MC_CHUNK):
                n = min(MC_CHUNK, mc_samples - start)
                out = run(m.mc_file, np.concatenate([x] * n, axis=0))[0]
                chunks.append(out.reshape(n, b, *out.shape[1:]))
            samples = np.concatenate(chunks, axis=0)  # (N, B, C, H, W)
            pooled.append(samples)
            means.append(samples.mean(axis=0))
        else:
            means.append(np.asarray(run(m.file, x)[0]))
    probs = np.mean(means, axis=0).astype(np.float32) if len(means) > 1 else means[0]
    std = None
    if pooled:
        std = mc_statistics(np.concatenate(pooled, axis=0), probs)
    elif mc_samples:
        log.warning("MC sampling asked for but no member has a dropout-on variant; no std")
    return SegOutput(probs=np.ascontiguousarray(probs, dtype=np.float32), std=std)


class BundleEngine(Engine):
    """An :class:`Engine` over a bundle given one ``_run(model_file, x)`` primitive."""

    backend = "abstract"
    device = "cpu"

    def __init__(self, bundle: Bundle, frame_file: Path) -> None:
        self.bundle = bundle
        self.frame_file = frame_file

    def _run(self, model: Path, x: np.ndarray) -> Sequence[np.ndarray]:
        raise NotImplementedError

    def _output_names(self, model: Path) -> Sequence[str]:
        raise NotImplementedError

    def frame(self, x: np.ndarray) -> FrameOutput:
        x = check_input(x, self.bundle.frame_spec, "frame")
        return pack_frame(self._run(self.frame_file, x), self._output_names(self.frame_file))

    def has_segmentation(self) -> bool:
        return self.bundle.has_segmentation()

    def segment(self, x: np.ndarray, mc_samples: int = 0) -> SegOutput:
        if not self.bundle.has_segmentation():
            return segment_ensemble(self._run, (), x, mc_samples)
        assert self.bundle.seg_spec is not None
        x = check_input(x, self.bundle.seg_spec, "seg")
        return segment_ensemble(self._run, self.bundle.seg_members, x, mc_samples)

    def describe(self) -> str:
        """One line for logs and the UI: backend, device, frame model file."""
        return f"{self.backend} ({self.device}, {self.frame_file.name})"
