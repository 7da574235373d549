"""Write a simulated dataset in pleura's layout (see :mod:`train.data.layout`)."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from train.data.labelme import mask_to_shapes, rasterise_shapes, write_labelme
from train.data.layout import N_ANNOTATORS
from train.data.video import write_video
from train.synth.acquisition import apply_acquisition, draw_acquisition, edge_gain
from train.synth.annotators import (
    annotator_biases,
    clinician_video_score,
    frame_score,
    noisy_annotations,
)
from train.synth.render import plan_video, render_video

log = logging.getLogger(__name__)
PROBE_CHOICES = ("convex", "linear", "mixed")
#: Bumped whenever the images or labels change for the same seed (written to synth.json).
SYNTH_VERSION = 1


@dataclass(frozen=True)
class SynthConfig:
    """What ``pleura synth`` writes.

    Attributes:
        patients, videos_per_patient, frames: dataset size.
        probe: "convex", "linear" or "mixed" (about 65 % convex, like ICLUS-DB's majority).
        size: square frame side in pixels (even).
        fps: frame rate written in the mp4.
        seed: everything follows from it (video i of patient p uses seed (seed, p, i)).
        transition_p: probability that a video drifts across a zone border.
        p_correct: each annotator's chance of giving the clinician's video score.
        crf: x264 quality of the videos.
        acquisition: also randomise the acquisition chain per video (resolution loss, JPEG
            round trip, fan-edge fading, raised floor; see :mod:`train.synth.acquisition`).
    """

    patients: int = 20
    videos_per_patient: int = 6
    frames: int = 60
    probe: str = "mixed"
    size: int = 256
    fps: int = 20
    seed: int = 0
    transition_p: float = 0.5
    p_correct: float = 0.8
    crf: int = 20
    acquisition: bool = False

    def __post_init__(self) -> None:
        if self.probe not in PROBE_CHOICES:
            raise ValueError(f"probe {self.probe!r}: valid are {', '.join(PROBE_CHOICES)}")
        if self.size < 64 or self.size % 2:
            raise ValueError(f"size must be even and >= 64, got {self.size}")
        if min(self.patients, self.videos_per_patient, self.frames, self.fps) < 1:
            raise ValueError("patients, videos-per-patient, frames and fps must be >= 1")


def _assignments(cfg: SynthConfig) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Balanced target scores, probes and annotator biases for the whole dataset."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 999_983]))
    n = cfg.patients * cfg.videos_per_patient
    targets = rng.permutation(np.arange(n) % 4)
    if cfg.probe == "mixed":
        probes = ["convex" if rng.random() < 0.65 else "linear" for _ in range(n)]
    else:
        probes = [cfg.probe] * n
    return targets, probes, annotator_biases(rng)


def synth_video(cfg: SynthConfig, patient: int, video: int, target: int, probe: str):
    """Render one video: frames (T, H, W) uint8, label maps (T, H, W) uint8, shapes, scores."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, patient, video]))
    beam_hw = (cfg.size, 2 * round(0.375 * cfg.size))  # (depth samples, scan lines)
    plan = plan_video(rng, probe, int(target), beam_hw, cfg.frames, cfg.fps, cfg.transition_p)
    geom, it = render_video(plan, cfg.size, rng, beam_hw)
    area = int(geom.sector.sum())
    acq = gain = None
    if cfg.acquisition:  # own stream: the other draws stay as without the option
        acq = draw_acquisition(np.random.default_rng(
            np.random.SeedSequence([cfg.seed, patient, video, 17])))
        gain = edge_gain(geom, acq.vignette) if acq.vignette > 0 else None
    frames, labels, shapes, scores = [], [], [], []
    for img, lab in it:
        if acq is not None:
            img = apply_acquisition(img, geom, acq, gain)
        sh = mask_to_shapes(lab)
        gt = rasterise_shapes(sh, lab.shape)  # the mask *is* what the polygons say
        frames.append(img)
        labels.append(gt)
        shapes.append(sh)
        scores.append(frame_score(gt, area))
    return np.stack(frames), np.stack(labels), shapes, np.asarray(scores), geom


def _write_one(out: Path, cfg: SynthConfig, p: int, v: int, target: int, probe: str,
               biases: np.ndarray) -> tuple[list[list], list]:
    """Render and write one video (mp4 + LabelMe files); return its CSV rows."""
    pid, hospital = f"p{p:03d}", f"sim-{'ABC'[p % 3]}"
    vid = f"{pid}_v{v:02d}"
    frames, _, shapes, scores, _ = synth_video(cfg, p, v, target, probe)
    write_video(out / "videos" / f"{vid}.mp4", frames, fps=cfg.fps, crf=cfg.crf)
    (out / "masks" / vid).mkdir(exist_ok=True)
    rows = []
    for i, sh in enumerate(shapes):
        write_labelme(out / "masks" / vid / f"{i}.json", sh, frames.shape[1:3],
                      image_path=f"../../videos/{vid}.mp4#frame={i}")
        rows.append([vid, i, int(scores[i]), probe, pid, hospital])
    true = clinician_video_score(scores)
    ann_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, p, v, 5]))
    return rows, [vid, pid, probe, *noisy_annotations(true, biases, ann_rng, cfg.p_correct)]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def write_dataset(out: str | Path, cfg: SynthConfig, progress: bool = True,
                  workers: int = 1) -> dict:
    """Write ``videos/``, ``masks/``, ``frames.csv`` and ``videos.csv`` under ``out``.

    Args:
        out: an empty or new folder.
        cfg: what to simulate.
        progress: show a tqdm bar.
        workers: processes rendering videos in parallel; the output does not depend on it.

    Returns:
        A summary: counts of videos/frames, frame-score histogram, frames per second
        (wall clock) and CPU seconds.

    Raises:
        FileExistsError: ``out`` already holds a dataset (pick a new folder).
    """
    out = Path(out)
    if (out / "frames.csv").exists() or (out / "videos").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty --out folder")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    targets, probes, biases = _assignments(cfg)
    tasks = [(out, cfg, p, v, int(targets[k]), probes[k], biases) for k, (p, v) in
             enumerate((p, v) for p in range(cfg.patients) for v in range(cfg.videos_per_patient))]
    frame_rows: list[list] = []
    video_rows: list[list] = []
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    bar = tqdm(total=len(tasks) * cfg.frames, unit="frame", desc="pleura synth",
               disable=not progress)
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = pool.map(_write_one, *zip(*tasks, strict=True))
            for rows, vrow in results:  # in task order, so the CSVs do not depend on timing
                frame_rows += rows
                video_rows.append(vrow)
                bar.update(cfg.frames)
    else:
        for task in tasks:
            rows, vrow = _write_one(*task)
            frame_rows += rows
            video_rows.append(vrow)
            bar.update(cfg.frames)
    bar.close()
    elapsed = time.perf_counter() - t0
    write_label_csvs(out, frame_rows, video_rows)
    hist = np.bincount([r[2] for r in frame_rows], minlength=4).tolist()
    summary = {"videos": len(video_rows), "frames": len(frame_rows), "frame_scores": hist,
               "seconds": round(elapsed, 2), "frames_per_s": round(len(frame_rows) / elapsed, 1),
               "cpu_seconds": round(_cpu_seconds() - cpu0, 2), "workers": workers}
    (out / "synth.json").write_text(json.dumps(
        {"synth_version": SYNTH_VERSION, "config": asdict(cfg), "summary": summary}, indent=1))
    log.info("wrote %s: %s", out, summary)
    return summary


def write_label_csvs(out: Path, frame_rows: list, video_rows: list,
                     video_extra: tuple[str, ...] = ()) -> None:
    """``frames.csv`` and ``videos.csv`` of the dataset layout (``video_extra``: columns after
    the five annotators, e.g. a composite's source clip)."""
    with (out / "frames.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "frame", "score", "probe", "patient_id", "hospital"])
        w.writerows(frame_rows)
    with (out / "videos.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "patient_id", "probe",
                    *(f"annotator_{i}" for i in range(1, N_ANNOTATORS + 1)), *video_extra])
        w.writerows(video_rows)
