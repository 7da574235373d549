"""``pleura synth --on-real``: healthy real clips in, composites in the dataset layout out.

Reads clip files, folders of clips or the POCUS ``MANIFEST.csv`` (its labelled healthy clips,
severity 0, whose licence allows training), renders ``variants`` composites of each with
:mod:`train.synth.composite`, and writes the layout the training code reads
(:mod:`train.data.layout`): ``videos/<id>.mp4``, ``frames.csv``, ``videos.csv``,
``masks/<id>/<frame>.json`` (LabelMe) and ``synth.json``. Each composite records the clip it
came from and that clip's *source* (the ``hospital`` column and the extra ``source`` column),
so leave-one-source-out splits can hold a whole source out, and its recording group as the
patient id, so a split by patient never puts two composites of one recording on both sides.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import resource
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from stream.sources import IMAGE_SUFFIXES
from train.data.labelme import mask_to_shapes, rasterise_shapes, write_labelme
from train.data.layout import N_ANNOTATORS, VIDEO_SUFFIXES
from train.data.pocus import read_pocus_manifest
from train.data.video import read_video, write_video
from train.real.clips import check_trainable, clip_groups, family_key
from train.real.sources import clip_source
from train.synth.annotators import clinician_video_score, frame_score
from train.synth.composite import COMPOSITE_VERSION, LEVELS, plan_composite, render_clip
from train.synth.pleura_line import track_pleura
from train.synth.writer import write_label_csvs


@dataclass(frozen=True)
class RealClip:
    """A healthy real clip to composite on, and where it came from.

    Attributes:
        path: the clip (a video file or a folder of frames).
        name: its file name (the manifest's ``file``).
        probe: "convex" / "linear", or None to guess from the sector.
        fps: frame rate (0 = unknown: 20 is written).
        source: the recording site / publisher (:func:`train.real.sources.clip_source`), for
            leave-one-source-out splits.
        group: recording / patient group (:func:`train.real.clips.clip_groups`): every
            composite made from it gets this as its patient id, so splits by patient never put
            two composites of one recording on both sides.
        source_url, licence, commercial_use: from the manifest ("" / None for own clips).
    """

    path: Path
    name: str
    probe: str | None
    fps: float
    source: str
    group: str
    source_url: str = ""
    licence: str = ""
    commercial_use: bool | None = None


MIN_CONTRAST = 1.5
"""A window whose pleura echo is below this over the sector's median is skipped (no line)."""
MIN_VISIBLE = 0.25
"""... and one where the pleura is seen on fewer than this fraction of the scan lines."""


@dataclass(frozen=True)
class CompositeConfig:
    """What ``pleura synth --on-real`` writes (field names are the command's flags).

    Attributes:
        on_real: clip files, folders of clips, or a POCUS ``MANIFEST.csv`` (its labelled
            healthy clips, severity 0).
        variants: composites per clip; levels cycle through ``levels`` from a per-clip offset.
        frames: frames per composite (a window of the clip; the whole clip if shorter).
        size: the longer side of the written frames (both sides even).
        seed: everything random follows from it and the clip's name.
        levels: target scores to draw.
        sources, exclude_sources: keep only / drop clips of these sources.
        commercial_only: keep only clips whose licence allows commercial use.
        probe: "convex" / "linear" forces the probe of clips that have none (not in a
            manifest); "mixed" guesses it from the sector.
        crf: x264 quality of the written videos.
    """

    on_real: tuple[str, ...]
    variants: int = 4
    frames: int = 60
    size: int = 256
    seed: int = 0
    levels: tuple[int, ...] = LEVELS
    sources: tuple[str, ...] = ()
    exclude_sources: tuple[str, ...] = ()
    commercial_only: bool = False
    probe: str = "mixed"
    crf: int = 20

    def __post_init__(self) -> None:
        if not self.on_real:
            raise ValueError("--on-real needs at least one clip, folder or MANIFEST.csv")
        if not self.levels or any(s not in LEVELS for s in self.levels):
            raise ValueError(f"levels {self.levels!r}: each must be one of 0, 1, 2, 3")
        if self.variants < 1 or self.frames < 2:
            raise ValueError("variants must be >= 1 and frames >= 2")
        if self.size < 64 or self.size % 2:
            raise ValueError(f"size must be even and >= 64, got {self.size}")
        if self.probe not in ("convex", "linear", "mixed"):
            raise ValueError(f"probe {self.probe!r}: valid are convex, linear, mixed")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "clip"


def _container_fps(path: Path) -> float:
    if path.is_dir():
        return 0.0
    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else 0.0
    except (av.error.FFmpegError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable video ({exc})") from None


def _manifest_clips(path: Path) -> list[RealClip]:
    every = read_pocus_manifest(path)
    groups = clip_groups(every)
    out = []
    for c in every:
        if c.severity != 0:
            continue
        check_trainable(c)  # an ND / unknown licence is refused, never silently dropped
        out.append(RealClip(c.path, c.filename, c.probe, c.fps, clip_source(c),
                            groups[c.filename], c.source_url, c.license, c.commercial_use))
    if not out:
        raise ValueError(f"{path}: no labelled healthy clip (severity 0) to composite on")
    return out


def _own_clip(path: Path, probe: str) -> RealClip:
    return RealClip(path, path.name, None if probe == "mixed" else probe, _container_fps(path),
                    _slug(path.parent.name), family_key(path.name))


def real_clips(cfg: CompositeConfig) -> list[RealClip]:
    """The healthy clips ``cfg`` names, filtered by source and licence.

    Raises:
        ValueError: a path that does not exist, a manifest without healthy clips, a licence
            that forbids training (``LicenceError``), two clips with one name, or nothing left
            after the filters. Each message names the input and the fix.
    """
    clips: list[RealClip] = []
    for item in cfg.on_real:
        p = Path(item)
        if not p.exists():
            raise ValueError(f"{p}: no such clip, folder or manifest (--on-real)")
        if p.suffix.lower() == ".csv":
            clips += _manifest_clips(p)
        elif p.is_dir() and not any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()):
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: no video ({', '.join(VIDEO_SUFFIXES)}) in this folder")
            clips += [_own_clip(f, cfg.probe) for f in found]
        else:
            clips.append(_own_clip(p, cfg.probe))
    if cfg.sources:
        clips = [c for c in clips if c.source in cfg.sources]
    clips = [c for c in clips if c.source not in cfg.exclude_sources]
    if cfg.commercial_only:
        clips = [c for c in clips if c.commercial_use]
    if not clips:
        raise ValueError("no clip left after --sources / --exclude-sources / --commercial-only")
    seen: dict[str, Path] = {}
    for c in clips:
        key = _slug(Path(c.name).stem)
        if key in seen and seen[key] != c.path:
            raise ValueError(f"{c.path} and {seen[key]} give the same video id {key!r}; "
                             "rename one")
        seen[key] = c.path
    return clips


def fit_size(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize (T, H, W) frames so the longer side is ``size`` and both sides are even."""
    T, H, W = frames.shape
    k = size / max(H, W)
    wh = (max(2, 2 * round(W * k / 2)), max(2, 2 * round(H * k / 2)))
    if wh == (W, H):
        return frames
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, wh, interpolation=interp) for f in frames])


def _clip_rng(cfg: CompositeConfig, clip: RealClip, variant: int) -> np.random.Generator:
    """The generator of one composite: fixed by the seed, the clip's name and the variant, so
    a composite is the same whatever other clips are listed."""
    return np.random.default_rng(np.random.SeedSequence(
        [cfg.seed, zlib.crc32(clip.name.encode()), variant]))


def composite_level(cfg: CompositeConfig, clip: RealClip, variant: int) -> int:
    """The target level of one variant: the levels in turn from a per-clip offset."""
    offset = int(np.random.SeedSequence([cfg.seed, zlib.crc32(clip.name.encode())])
                 .generate_state(1)[0])
    return cfg.levels[(variant + offset) % len(cfg.levels)]


@dataclass
class CompositeVideo:
    """One rendered composite: frames, label maps (re-rasterised from their polygons), the
    LabelMe shapes, frame scores and what it was made from."""

    frames: np.ndarray
    labels: np.ndarray
    shapes: list[list[dict]]
    scores: np.ndarray
    level: int
    first_frame: int
    probe: str
    contrast: float


def composite_video(video: np.ndarray, cfg: CompositeConfig, clip: RealClip,
                    variant: int) -> CompositeVideo | str:
    """Render variant ``variant`` of a decoded clip ``video`` (N, H, W) uint8.

    Returns:
        The :class:`CompositeVideo`, or the reason (a string) why the window was skipped
        (no pleural line found).
    """
    rng = _clip_rng(cfg, clip, variant)
    level = composite_level(cfg, clip, variant)
    n = len(video)
    T = min(cfg.frames, n)
    start = int(rng.integers(0, n - T + 1))
    frames = fit_size(video[start:start + T], cfg.size)
    track = track_pleura(frames, clip.probe)
    seen = float(track.visible.mean())
    if track.contrast < MIN_CONTRAST or seen < MIN_VISIBLE:
        return (f"no pleural line found (contrast {track.contrast:.2f} < {MIN_CONTRAST} or "
                f"seen on {seen:.0%} < {MIN_VISIBLE:.0%} of the lines)")
    plan = plan_composite(level, rng, track.visible.mean(axis=0) > 0.5)
    imgs, labs = render_clip(frames, track, plan)
    area = int(track.geometry.geom.sector.sum())
    shapes, gts, scores = [], [], []
    for lab in labs:
        sh = mask_to_shapes(lab)
        gt = rasterise_shapes(sh, lab.shape)  # the mask *is* what the polygons say
        shapes.append(sh)
        gts.append(gt)
        scores.append(frame_score(gt, area))
    return CompositeVideo(imgs, np.stack(gts), shapes, np.asarray(scores), level, start,
                          track.geometry.probe, track.contrast)


_VIDEO_EXTRA = ("level", "source", "source_clip", "source_url", "licence", "commercial_use",
                "first_frame")


def _write_clip(out: Path, cfg: CompositeConfig, clip: RealClip) -> dict:
    """Decode one clip, write its variants (mp4 + LabelMe); return CSV rows and notes."""
    video = read_video(clip.path)
    frame_rows, video_rows, skipped = [], [], []
    patient = "real-" + _slug(clip.group)
    for v in range(cfg.variants):
        res = composite_video(video, cfg, clip, v)
        if isinstance(res, str):
            skipped.append({"clip": clip.name, "variant": v, "reason": res})
            continue
        vid = f"{_slug(Path(clip.name).stem)}_c{v:02d}"
        write_video(out / "videos" / f"{vid}.mp4", res.frames, fps=round(clip.fps) or 20,
                    crf=cfg.crf)
        (out / "masks" / vid).mkdir(exist_ok=True)
        for i, sh in enumerate(res.shapes):
            write_labelme(out / "masks" / vid / f"{i}.json", sh, res.frames.shape[1:3],
                          image_path=f"../../videos/{vid}.mp4#frame={i}")
            frame_rows.append([vid, i, int(res.scores[i]), res.probe, patient, clip.source])
        true = clinician_video_score(res.scores)  # exact truth: all five "clinicians" agree
        use = "" if clip.commercial_use is None else ("yes" if clip.commercial_use else "no")
        video_rows.append([vid, patient, res.probe, *([true] * N_ANNOTATORS), res.level,
                           clip.source, clip.name, clip.source_url, clip.licence, use,
                           res.first_frame])
    return {"frames": frame_rows, "videos": video_rows, "skipped": skipped}


def write_composites(out: str | Path, cfg: CompositeConfig, progress: bool = True,
                     workers: int = 1) -> dict:
    """Write composites of every clip of ``cfg`` in the dataset layout.

    ``videos/<id>.mp4``, ``frames.csv`` (``hospital`` = the clip's source), ``videos.csv``
    (annotators = the true video score; extra columns ``level``, ``source``, ``source_clip``,
    ``source_url``, ``licence``, ``commercial_use``, ``first_frame``), ``masks/<id>/<i>.json``
    and ``synth.json`` (``kind: composite``, the config, the summary, the skipped windows).

    Raises:
        FileExistsError: ``out`` already holds a dataset.
        ValueError: bad ``--on-real`` input (see :func:`real_clips`); nothing is written.
    """
    out = Path(out)
    if (out / "frames.csv").exists() or (out / "videos").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty --out folder")
    clips = real_clips(cfg)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    bar = tqdm(total=len(clips), unit="clip", desc="pleura synth --on-real",
               disable=not progress)
    results = []
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for res in pool.map(_write_clip, [out] * len(clips), [cfg] * len(clips), clips):
                results.append(res)  # in clip order: the CSVs do not depend on timing
                bar.update()
    else:
        for clip in clips:
            results.append(_write_clip(out, cfg, clip))
            bar.update()
    bar.close()
    frame_rows = [r for res in results for r in res["frames"]]
    video_rows = [r for res in results for r in res["videos"]]
    skipped = [s for res in results for s in res["skipped"]]
    write_label_csvs(out, frame_rows, video_rows, _VIDEO_EXTRA)
    elapsed = time.perf_counter() - t0
    summary = {"clips": len(clips), "videos": len(video_rows), "frames": len(frame_rows),
               "frame_scores": np.bincount([r[2] for r in frame_rows], minlength=4).tolist(),
               "levels": np.bincount([r[8] for r in video_rows], minlength=4).tolist(),
               "sources": dict(sorted(Counter(r[9] for r in video_rows).items())),
               "skipped": len(skipped), "seconds": round(elapsed, 2),
               "frames_per_s": round(len(frame_rows) / max(elapsed, 1e-9), 1),
               "cpu_seconds": round(_cpu_seconds() - cpu0, 2), "workers": workers}
    (out / "synth.json").write_text(json.dumps(
        {"kind": "composite", "composite_version": COMPOSITE_VERSION, "config": cli_config(cfg),
         "inputs": list(cfg.on_real), "summary": summary, "skipped": skipped}, indent=1))
    return summary


def cli_config(cfg: CompositeConfig) -> dict:
    """``cfg`` with the values spelled as ``pleura synth`` flags take them (comma lists), so
    :func:`train.export.reconstruct_command` rebuilds the command from ``synth.json``."""
    d = asdict(cfg)
    d.update(on_real=" ".join(cfg.on_real), levels=",".join(map(str, cfg.levels)),
             sources=",".join(cfg.sources), exclude_sources=",".join(cfg.exclude_sources))
    return d


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
