"""The one scoring core: a frame in, its score, crop boxes and running video score out.

Every path that scores frames goes through these functions, so they all give the same numbers:
the live worker (:meth:`stream.workercore.Worker.process`), ``pleura score``
(:func:`stream.score_clips.score_frames`), the report tab (:func:`ui.scoring.score_rows`, via
``pleura score``'s clip loop) and ``pleura exam`` (:func:`stream.exam.scoring.score_into_exam`,
likewise). One function per stage, pure except the last, which updates one stream's state:

1. :func:`prepare_frame` / :func:`prepare_batch`: decoded frame -> grey -> letterbox ->
   normalised (C, H, W) model input (:mod:`engines.preprocess`, the bundle's frame spec).
2. :func:`infer`: (B, C, H, W) -> :class:`engines.base.FrameOutput` (probabilities of crop 1,
   θ₁, θ₂, findings), on the bundle's engine.
3. :func:`locate`: θ₁, θ₂ -> both crops' corners in *source-frame* pixels, and whether the
   model is whole-frame (θ = identity) (:mod:`engines.postprocess`). Masks of the segmentation
   members go to source pixels the same way (:func:`segment`).
4. :meth:`RunningScore.update` (through :func:`score_frame`): the frame's probabilities into
   the stream's running uninorm video score (Roy et al. 2020 section 2, PAPER.md;
   :class:`engines.uninorm.RunningUninorm`) and its findings into the running clip summary
   (:class:`engines.findings.RunningFindings`); a bad frame raises ``ValueError`` and leaves
   the state unchanged, so a caller drops that frame and goes on.

Callers only format: display scaling, RESULT fields and wire encoding stay in ``stream/``
(:mod:`stream.result_fields`, :mod:`stream.workercore`); JSON/CSV in :mod:`stream.score_output`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import FrameOutput
from engines.bundle import Bundle
from engines.findings import RunningFindings, check_findings, resolve_names
from engines.postprocess import crop_boxes, is_identity, mask_in_source
from engines.preprocess import (
    Letterbox,
    PreprocessSpec,
    preprocess_batch,
    preprocess_frame,
    to_grey,
)
from engines.uninorm import N_CLASSES, RunningUninorm, check_e

log = logging.getLogger(__name__)

DEFAULT_E = (0.5, 0.5, 0.5, 0.5)
"""Uninorm neutral elements used when a bundle has no ``aggregator.json`` (an untrained video
score: every class weighted alike)."""


@dataclass(frozen=True)
class Scorer:
    """A frame model ready to score (stages 2-3), and what the running stage needs.

    Attributes:
        engine: anything with ``frame((B, C, H, W) float32) -> FrameOutput`` (an
            :class:`engines.base.Engine`, or a PyTorch run's engine in ``pleura eval score``).
        spec: the frame model's preprocessing (the bundle manifest's ``inputs.frame``).
        e: (4,) uninorm neutral elements of the video score.
        name: bundle (or run) name.
        backend: e.g. "onnxruntime", "tensorrt", "torch".
        finding_names: names of the ``findings`` output, () without a findings head.
        bundle: the loaded bundle (None for an engine made outside a bundle).
    """

    engine: Any
    spec: PreprocessSpec
    e: np.ndarray
    name: str
    backend: str
    finding_names: tuple[str, ...] = ()
    bundle: Bundle | None = field(default=None, compare=False)

    @property
    def in_hw(self) -> tuple[int, int]:
        """(H, W) of the frame model's input."""
        return self.spec.height, self.spec.width

    def running(self) -> RunningScore:
        """A fresh running state for one stream or clip (stage 4)."""
        return RunningScore(self.e, self.finding_names)

    def close(self) -> None:
        """Free the engine (ONNX Runtime sessions, TensorRT contexts)."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def bundle_e(bundle: Bundle) -> np.ndarray:
    """(4,) neutral elements of ``bundle``'s aggregator, :data:`DEFAULT_E` (logged) without one.

    Raises:
        ValueError: the aggregator's values are not 4 numbers in [0, 1].
    """
    if bundle.uninorm_e is None:
        log.warning("bundle %s has no aggregator.json; the video score uses e = %s (untrained)",
                    bundle.name, DEFAULT_E)
        return np.asarray(DEFAULT_E, dtype=np.float64)
    return check_e(bundle.uninorm_e)


def load_scorer(bundle: str | Path | Bundle | None = None, backend: str = "auto",
                threads: int | None = None, **engine_options: Any) -> Scorer:
    """Load a bundle (None: the shipped default) and put its frame model on a backend.

    Args:
        bundle: bundle folder, a loaded :class:`engines.bundle.Bundle`, or None.
        backend: "auto", "onnxruntime" or "tensorrt".
        threads: CPU intra-op threads (None: all cores).
        **engine_options: passed to :func:`engines.create_engine` (e.g. ``frame_model``).

    Raises:
        engines.bundle.BundleError: the bundle fails verification (says what to do).
        OSError: the folder cannot be read.
    """
    import engines  # engines/__init__ imports the backends; keep this module light

    b = engines.load_bundle(bundle if bundle is not None else engines.default_bundle_path())
    engine = engines.create_engine(b, backend=backend, threads=threads, **engine_options)
    return Scorer(engine, b.frame_spec, bundle_e(b), b.name,
                  str(getattr(engine, "backend", backend)), b.finding_names, b)


# ----------------------------------------------------------------------------- 1. prepare


@dataclass(frozen=True)
class Prepared:
    """One frame after stage 1.

    Attributes:
        grey: (H, W) uint8, the source frame in grey (what the display and the seg lane use).
        x: (C, h, w) float32 model input.
        lb: the letterbox from source pixels to model-input pixels.
    """

    grey: np.ndarray
    x: np.ndarray
    lb: Letterbox


def prepare_frame(image: np.ndarray, spec: PreprocessSpec) -> Prepared:
    """Stage 1 for one frame: any decoded frame -> grey, model input, letterbox.

    Raises:
        ValueError: the frame is not an image (:func:`engines.preprocess.to_grey` says why).
    """
    grey = to_grey(image)
    x, lb = preprocess_frame(grey, spec)
    return Prepared(grey, x, lb)


def prepare_batch(images: Sequence[np.ndarray], spec: PreprocessSpec,
                  ) -> tuple[np.ndarray, list[Letterbox]]:
    """Stage 1 for a batch: B decoded frames -> (B, C, h, w) float32 and B letterboxes."""
    return preprocess_batch(images, spec)


# ----------------------------------------------------------------------------- 2. infer


def infer(scorer: Scorer, x: np.ndarray) -> FrameOutput:
    """Stage 2: (B, C, h, w) float32 model inputs -> the frame model's outputs for B frames."""
    return scorer.engine.frame(x)


# ----------------------------------------------------------------------------- 3. locate


def locate(out: FrameOutput, lbs: Sequence[Letterbox], in_hw: tuple[int, int],
           ) -> tuple[np.ndarray, np.ndarray]:
    """Stage 3: both STN crops of a batch in source-frame pixels.

    θ -> corners in model-input pixels (:func:`engines.postprocess.crop_boxes`, Jaderberg et
    al. 2015 ``affine_grid`` convention) -> source pixels through each frame's letterbox
    (:meth:`engines.preprocess.Letterbox.to_source`).

    Args:
        out: the engine's outputs for B frames.
        lbs: the B frames' letterboxes.
        in_hw: (H, W) of the model input.

    Returns:
        boxes: (B, 2, 4, 2) float64 corners (x, y), crop 1 then crop 2, TL, TR, BR, BL.
        whole: (B,) bool, True where both θ are the identity (a whole-frame model, whose
        "crops" are the whole letterboxed input and mean nothing).
    """
    corners = crop_boxes(out, in_hw)  # (B, 2, 4, 2) model-input pixels
    boxes = np.stack([lb.to_source(c) for lb, c in zip(lbs, corners, strict=True)])
    whole = np.array([is_identity(t1, t2) for t1, t2 in zip(out.theta1, out.theta2,
                                                             strict=True)], dtype=bool)
    return boxes, whole


def segment(engine: Any, grey: np.ndarray, spec: PreprocessSpec, mc_samples: int = 0,
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Stages 1-3 of the segmentation members for one frame: masks in source-frame pixels.

    Args:
        engine: an engine with ``segment``.
        grey: (H, W) uint8 source frame.
        spec: the bundle's segmentation input spec.
        mc_samples: MC-dropout passes for the uncertainty map (0: none).

    Returns:
        labels: (H, W) uint8, 0 = background, s + 1 = score s.
        unc: (H, W) uint8 uncertainty (:func:`engines.postprocess.uncertainty_u8`) or None.
    """
    x, lb = preprocess_frame(grey, spec)
    out = engine.segment(x[None], mc_samples=mc_samples)
    return mask_in_source(out.probs[0], None if out.std is None else out.std[0], lb)


# ----------------------------------------------------------------------------- 4. running


class RunningScore:
    """One stream's (or clip's) running state: video score, findings summary, frame counts.

    O(1) memory per stream (O(F) with F findings); :meth:`update` is O(C + F) per frame.

    Attributes:
        agg: the running uninorm (its ``score``, ``probs``, ``evidence``, ``log_value``).
        findings: the running findings summary, None until a frame with findings arrives
            (it is sized by the model's output, named by the bundle).
        frame_counts: frames of this video per frame score 0..3.
    """

    def __init__(self, e: np.ndarray | Sequence[float], finding_names: Sequence[str] = ()
                 ) -> None:
        self.agg = RunningUninorm(e)
        self.finding_names = tuple(finding_names)
        self.findings: RunningFindings | None = None
        self.frame_counts = [0] * N_CLASSES

    @property
    def n_frames(self) -> int:
        return self.agg.n_frames

    def reset(self) -> None:
        """A new video: restart the video score, the findings summary and the frame counts."""
        self.agg.reset()
        self.frame_counts = [0] * N_CLASSES
        if self.findings is not None:
            self.findings.reset()

    def update(self, probs: np.ndarray, findings: np.ndarray | None = None,
               ) -> np.ndarray | None:
        """Add one frame.

        Args:
            probs: (4,) the frame's class probabilities.
            findings: (F,) its finding probabilities, or None without a findings head.

        Returns:
            The (F,) checked findings (float64, clipped to [0, 1]) or None.

        Raises:
            ValueError: wrong sizes or non-finite values; nothing is changed (drop the frame).
        """
        found, names = None, ()
        if findings is not None:
            f = np.asarray(findings).reshape(-1)
            names = (self.findings.names if self.findings is not None
                     else resolve_names(self.finding_names, f.shape[0]))
            found = check_findings(f, len(names))  # checked before any state changes
        self.agg.update(probs)  # raises before changing anything on bad probabilities
        if found is not None:
            if self.findings is None:
                self.findings = RunningFindings(names)
            self.findings.update(found)
        score = int(np.argmax(probs))
        if 0 <= score < len(self.frame_counts):
            self.frame_counts[score] += 1
        return found


@dataclass(frozen=True)
class FrameScore:
    """One frame through the core, and the running state right after it.

    Attributes:
        probs: (4,) float64 class probabilities (crop 1's, Roy et al. 2020).
        score: the frame score 0..3 (argmax of ``probs``).
        boxes: (2, 4, 2) float64 crop corners in source-frame pixels (:func:`locate`).
        whole_frame: both θ are the identity (no crop to draw).
        findings: (F,) float64 finding probabilities, or None without a findings head.
        video_score: the running video score right after this frame (0..3).
        video_probs: (4,) the running video probabilities right after this frame (softmax of
            the uninorm aggregate, Roy et al. 2020); a snapshot, so frames of one batch that
            share a running state each keep their own.
    """

    probs: np.ndarray
    score: int
    boxes: np.ndarray
    whole_frame: bool
    findings: np.ndarray | None = None
    video_score: int = 0
    video_probs: np.ndarray = field(default_factory=lambda: np.full(N_CLASSES, 1 / N_CLASSES))


def score_frame(running: RunningScore, out: FrameOutput, i: int, boxes: np.ndarray,
                whole: np.ndarray) -> FrameScore:
    """Stage 4 for frame ``i`` of a batch: update ``running`` and return the frame's result.

    Args:
        running: the state of the stream (or clip) frame ``i`` belongs to.
        out: the batch's engine outputs (stage 2).
        i: the frame's position in the batch.
        boxes, whole: the batch's :func:`locate` results.

    Raises:
        ValueError: a bad frame (non-finite or mis-sized outputs); ``running`` is unchanged.
    """
    probs = np.asarray(out.probs[i], dtype=np.float64)
    f = None if out.findings is None else out.findings[i]
    found = running.update(probs, f)
    return FrameScore(probs, int(np.argmax(probs)), boxes[i], bool(whole[i]), found,
                      running.agg.score, running.agg.probs)


def score_batch(scorer: Scorer, x: np.ndarray, lbs: Sequence[Letterbox],
                running: Sequence[RunningScore],
                ) -> tuple[FrameOutput, list[FrameScore | ValueError]]:
    """Stages 2-4 for a prepared batch: one running state per frame (the same one for a clip).

    Returns:
        The engine outputs and, per frame, its :class:`FrameScore` or the ``ValueError`` that
        dropped it (the other frames are scored).
    """
    out = infer(scorer, x)
    boxes, whole = locate(out, lbs, scorer.in_hw)
    results: list[FrameScore | ValueError] = []
    for i, state in enumerate(running):
        try:
            results.append(score_frame(state, out, i, boxes, whole))
        except ValueError as exc:
            results.append(exc)
    return out, results
