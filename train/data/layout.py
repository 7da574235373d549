"""Reader for pleura's dataset layout (DESIGN.md, "Data"), written by ``pleura synth``.

::

    dataset/
      videos/<video_id>.mp4            # or videos/<video_id>/ : a folder of PNG frames
      frames.csv     video_id, frame, score (0-3), [probe], [patient_id], [hospital]
      videos.csv     video_id, patient_id, probe, annotator_1..annotator_5 (may be empty)
      masks/<video_id>/<frame>.json    # LabelMe polygons, labels "0".."3"

Everything is validated when the dataset is read; an error names the file and line and says
what to fix. Splits are always by patient (Roy et al. 2020, sec. IV-A).
"""

from __future__ import annotations

import csv
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.data.labelme import MaskError, read_labelme
from train.data.video import count_frames, read_video

N_ANNOTATORS = 5
N_SCORES = 4
PROBES = ("convex", "linear")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".mpeg", ".mpg", ".gif", ".webm")
_VIDEO_COLUMNS = ("video_id", "patient_id", "probe")
_FRAME_COLUMNS = ("video_id", "frame", "score")


class DatasetError(ValueError):
    """Bad data in a dataset folder. The message names the file (and line) and the fix."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of ``videos.csv``.

    Attributes:
        annotators: five video-level scores 0..3 (``None`` where that clinician gave none).
        path: the mp4 (or other container) or the folder of frames.
    """

    video_id: str
    patient_id: str
    probe: str
    annotators: tuple[int | None, ...]
    path: Path


@dataclass(frozen=True)
class FrameRecord:
    """One labelled frame of ``frames.csv`` (probe/patient filled in from ``videos.csv``)."""

    video_id: str
    frame: int
    score: int
    probe: str
    patient_id: str
    hospital: str | None


def _score(value: str, where: str, column: str, optional: bool = False) -> int | None:
    value = value.strip()
    if optional and value == "":
        return None
    try:
        s = int(float(value))
        if float(value) != s:
            raise ValueError
    except ValueError:
        raise DatasetError(f"{where}: {column} {value!r} is not an integer score 0..3") from None
    if not 0 <= s < N_SCORES:
        raise DatasetError(f"{where}: {column} {s} is outside 0..3 (Soldati score)")
    return s


def csv_records(reader, path: Path):
    """Yield ``(line, cells)`` of non-empty records; ``line`` is where the record *starts*.

    A record that spans lines (an unclosed quote) is reported as malformed at its first line.
    """
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(f"{path}:{start}: malformed CSV ({exc})") from None
        if reader.line_num != start and any('"' in c or "\n" in c for c in cells):
            raise DatasetError(f"{path}:{start}: malformed CSV: a quoted field runs on to line "
                               f"{reader.line_num} (an unclosed quote?)")
        if cells and any(c.strip() for c in cells):
            yield start, cells


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with their 1-based line numbers; checks the header and row widths."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; a dataset needs videos.csv and frames.csv "
                           "(see DESIGN.md, 'Data')")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path}:1: empty file; expected header "
                               f"{','.join(required)}") from None
        except csv.Error as exc:
            raise DatasetError(f"{path}:1: malformed CSV ({exc})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                               f"required: {', '.join(required)}")
        rows = []
        for line, cells in csv_records(reader, path):
            if len(cells) != len(header):
                raise DatasetError(f"{path}:{line}: malformed CSV row: {len(cells)} fields, "
                                   f"header has {len(header)}")
            rows.append((line, dict(zip(header, (c.strip() for c in cells), strict=True))))
    return rows


def _find_video(root: Path, video_id: str) -> Path | None:
    folder = root / "videos" / video_id
    if folder.is_dir():
        return folder
    for suffix in VIDEO_SUFFIXES:
        p = folder.with_name(video_id + suffix)
        if p.is_file():
            return p
    return None


def _read_videos(root: Path) -> dict[str, VideoRecord]:
    path = root / "videos.csv"
    videos: dict[str, VideoRecord] = {}
    for line, row in _read_csv(path, _VIDEO_COLUMNS):
        where = f"{path}:{line}"
        vid = row["video_id"]
        if not vid:
            raise DatasetError(f"{where}: empty video_id")
        if vid in videos:
            raise DatasetError(f"{where}: duplicate video_id {vid!r}")
        probe = row["probe"].lower()
        if probe not in PROBES:
            raise DatasetError(f"{where}: probe {row['probe']!r} is not one of {', '.join(PROBES)}")
        if not row["patient_id"]:
            raise DatasetError(f"{where}: empty patient_id (splits are by patient)")
        ann = tuple(_score(row.get(f"annotator_{k}", ""), where, f"annotator_{k}", optional=True)
                    for k in range(1, N_ANNOTATORS + 1))
        vpath = _find_video(root, vid)
        if vpath is None:
            raise DatasetError(f"{where}: video {vid!r} not found: expected "
                               f"{root / 'videos' / (vid + '.mp4')} or a folder of PNG frames "
                               f"{root / 'videos' / vid}/")
        videos[vid] = VideoRecord(vid, row["patient_id"], probe, ann, vpath)
    return videos


def _read_frames(root: Path, videos: dict[str, VideoRecord]) -> list[FrameRecord]:
    path = root / "frames.csv"
    frames: list[FrameRecord] = []
    seen: dict[tuple[str, int], int] = {}
    max_frame: dict[str, tuple[int, int]] = {}
    for line, row in _read_csv(path, _FRAME_COLUMNS):
        where = f"{path}:{line}"
        vid = row["video_id"]
        rec = videos.get(vid)
        if rec is None:
            raise DatasetError(f"{where}: video_id {vid!r} is not in videos.csv (missing video)")
        try:
            idx = int(row["frame"])
        except ValueError:
            raise DatasetError(f"{where}: frame {row['frame']!r} is not an integer") from None
        if idx < 0:
            raise DatasetError(f"{where}: negative frame index {idx}")
        if (vid, idx) in seen:
            raise DatasetError(f"{where}: frame {idx} of {vid!r} already labelled on line "
                               f"{seen[vid, idx]}")
        seen[vid, idx] = line
        score = _score(row["score"], where, "score")
        probe = (row.get("probe") or rec.probe).lower()
        patient = row.get("patient_id") or rec.patient_id
        if probe != rec.probe or patient != rec.patient_id:
            raise DatasetError(f"{where}: probe/patient_id ({probe}, {patient}) disagree with "
                               f"videos.csv ({rec.probe}, {rec.patient_id})")
        frames.append(FrameRecord(vid, idx, int(score), probe, patient,
                                  row.get("hospital") or None))
        if idx >= max_frame.get(vid, (-1, 0))[0]:
            max_frame[vid] = (idx, line)
    for vid, (idx, line) in max_frame.items():
        n = count_frames(videos[vid].path)
        if idx >= n:
            raise DatasetError(f"{path}:{line}: frame count mismatch: frame {idx} of {vid!r} is "
                               f"labelled but {videos[vid].path} has {n} frames (0..{n - 1})")
    return frames


def _index_masks(root: Path, videos: dict[str, VideoRecord]) -> dict[tuple[str, int], Path]:
    masks: dict[tuple[str, int], Path] = {}
    mroot = root / "masks"
    if not mroot.is_dir():
        return masks
    for folder in sorted(p for p in mroot.iterdir() if p.is_dir()):
        if folder.name not in videos:
            raise DatasetError(f"{folder}: masks for video {folder.name!r}, which is not in "
                               f"{root / 'videos.csv'}")
        for f in folder.glob("*.json"):
            if not f.stem.isdigit():
                raise DatasetError(f"{f}: mask files are named <frame>.json (e.g. 12.json)")
            masks[folder.name, int(f.stem)] = f
    return masks


@dataclass
class LusDataset:
    """A dataset folder, validated. Frames and masks are read on demand."""

    root: Path
    videos: dict[str, VideoRecord]
    frames: list[FrameRecord]
    masks: dict[tuple[str, int], Path] = field(default_factory=dict, repr=False)
    cache_videos: int = 8
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _by_video: dict[str, list[FrameRecord]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for fr in self.frames:
            self._by_video.setdefault(fr.video_id, []).append(fr)
        for lst in self._by_video.values():
            lst.sort(key=lambda r: r.frame)

    def frames_of(self, video_id: str) -> list[FrameRecord]:
        """Labelled frames of one video, in frame order."""
        return self._by_video.get(video_id, [])

    def read_frames(self, video_id: str) -> np.ndarray:
        """All decoded frames of a video, (N, H, W) uint8 grey, read-only (LRU-cached)."""
        if video_id in self._cache:
            self._cache.move_to_end(video_id)
            return self._cache[video_id]
        if video_id not in self.videos:
            raise KeyError(f"unknown video_id {video_id!r}")
        arr = read_video(self.videos[video_id].path)
        arr.setflags(write=False)
        self._cache[video_id] = arr
        while len(self._cache) > self.cache_videos:
            self._cache.popitem(last=False)
        return arr

    def has_mask(self, video_id: str, frame: int) -> bool:
        return (video_id, int(frame)) in self.masks

    def read_mask(self, video_id: str, frame: int) -> np.ndarray:
        """(H, W) uint8 label map, 0 = background, s + 1 = score s.

        Raises:
            KeyError: the frame has no mask (check :meth:`has_mask`).
            DatasetError: the LabelMe file is bad (names file and line).
        """
        path = self.masks.get((video_id, int(frame)))
        if path is None:
            raise KeyError(f"no mask for {video_id!r} frame {frame}")
        try:
            return read_labelme(path, self._frame_hw(video_id, path))
        except MaskError as exc:
            raise DatasetError(str(exc)) from None

    def _frame_hw(self, video_id: str, path: Path) -> tuple[int, int]:
        try:
            doc = json.loads(path.read_text())
            return int(doc["imageHeight"]), int(doc["imageWidth"])
        except (KeyError, TypeError, ValueError, OSError):
            return tuple(self.read_frames(video_id).shape[1:3])  # type: ignore[return-value]


def read_dataset(root: str | Path, check_masks: bool = True) -> LusDataset:
    """Read and validate a dataset folder.

    Args:
        root: the dataset folder (with ``videos.csv``, ``frames.csv``, ``videos/``, ``masks/``).
        check_masks: rasterise every LabelMe file now, so a bad polygon fails here, not
            mid-training (JSON only, no video decoding; about 0.2 ms per file).

    Raises:
        DatasetError: malformed CSV, score outside 0..3, missing video, frame count mismatch,
            unknown mask label, polygon outside the image. The message names file and line.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder (make one with `pleura synth --out`)")
    # A symlinked dataset (data/sim-train -> .sim-train.v1) is pinned to the version read now,
    # so a regeneration swapped in later never mixes old labels with new videos.
    root = root.resolve()
    videos = _read_videos(root)
    frames = _read_frames(root, videos)
    masks = _index_masks(root, videos)
    ds = LusDataset(root=root, videos=videos, frames=frames, masks=masks)
    if check_masks:
        for (vid, idx) in sorted(masks):
            ds.read_mask(vid, idx)
    return ds


def split_by_patient(ds: LusDataset, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                     seed: int = 0) -> dict[str, list[str]]:
    """Patient-disjoint train/val/test split of the video ids, deterministic for a seed.

    Patients are shuffled with ``seed`` and cut by ``fractions`` of the patient count
    (largest-remainder rounding; each non-zero fraction gets at least one patient when there
    are enough).

    Returns:
        ``{"train": [video_id, ...], "val": [...], "test": [...]}``, ids sorted.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    patients = sorted({v.patient_id for v in ds.videos.values()})
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    total = float(sum(fractions))
    n = len(order)
    exact = [f / total * n for f in fractions]
    counts = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:n - sum(counts)]:  # largest-remainder rounding
        counts[i] += 1
    for i, f in enumerate(fractions):  # every asked-for split gets a patient if possible
        if f > 0 and counts[i] == 0 and n >= sum(1 for x in fractions if x > 0):
            counts[i] = 1
            counts[int(np.argmax(counts))] -= 1
    cuts = np.cumsum([0, *counts])
    names = ("train", "val", "test")
    members = {names[i]: set(order[cuts[i]:cuts[i + 1]]) for i in range(3)}
    return {name: sorted(v.video_id for v in ds.videos.values() if v.patient_id in pats)
            for name, pats in members.items()}


def video_label(rec: VideoRecord, mode: str = "majority") -> int | None:
    """Video-level score from the five clinicians.

    Args:
        rec: the video.
        mode: ``"majority"`` (most frequent score; a tie goes to the higher score, the
            clinically cautious choice) or ``"annotator_k"`` for k in 1..5.

    Returns:
        0..3, or ``None`` when nobody (or that annotator) scored the video.
    """
    if mode == "majority":
        votes = [a for a in rec.annotators if a is not None]
        if not votes:
            return None
        counts = Counter(votes)
        top = max(counts.values())
        return max(s for s, c in counts.items() if c == top)
    if mode.startswith("annotator_") and mode[10:].isdigit() and \
            1 <= int(mode[10:]) <= len(rec.annotators):
        return rec.annotators[int(mode[10:]) - 1]
    raise ValueError(f"unknown mode {mode!r}; valid: majority, "
                     + ", ".join(f"annotator_{k}" for k in range(1, len(rec.annotators) + 1)))
