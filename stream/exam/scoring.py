"""Score clips into an exam through ``pleura score``'s path (:func:`stream.score.score_paths`,
which scores through the one scoring core :mod:`engines.scorer`).

A clip scored here has exactly the numbers ``pleura score CLIP`` prints; its full
pleura-score document is kept in ``EXAM/scores/<clip>.json``. A clip that ``pleura score``
calls not scorable (``scorable: false``: no image — a probe lifted off the skin —, noise, not a
lung view; :mod:`engines.scorable`) is entered as failed with that reason (``ok`` false,
``error``) and no score, probabilities, key frame or findings, so it never scores its zone.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.scorer import Scorer
from stream.exam.store import ClipRecord, Exam, write_json_atomic
from stream.score import score_paths

log = logging.getLogger(__name__)


def pleura_version() -> str:
    try:
        return importlib.metadata.version("pleura")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def model_info(scorer: Scorer, bundle_path: str | Path | None = None) -> dict[str, Any]:
    """Name, backend and version of the model that scored (for the report)."""
    info: dict[str, Any] = {"name": scorer.name, "backend": scorer.backend,
                            "pleura": pleura_version()}
    if bundle_path is None:
        import engines

        bundle_path = engines.default_bundle_path()
    ran = getattr(scorer.engine, "frame_file", None)  # the model file that scored
    if hasattr(scorer.engine, "describe"):
        info["engine"] = str(scorer.engine.describe())
    try:
        m = json.loads((Path(bundle_path) / "manifest.json").read_text(encoding="utf-8"))
        frame = (Path(ran).name if ran is not None else
                 (m.get("models", {}).get("frame") or {}).get("file", "frame.onnx"))
        sha = ((m.get("files") or {}).get(frame) or {}).get("sha256", "")
        info.update(bundle=str(m.get("name", "")), created_at=str(m.get("created_at", "")),
                    frame_sha256=sha[:12],
                    version=f"bundle {m.get('name', '')} (created {m.get('created_at', '?')}, "
                            f"{frame} sha256 {sha[:12]})")
    except (OSError, ValueError, AttributeError):
        info["version"] = scorer.name
    return info


def key_frame(frames: list[dict[str, Any]], score: int) -> int | None:
    """Index (into ``frames``) of the frame with the highest probability of ``score``."""
    if not frames:
        return None
    p = np.array([fr["probs"][score] for fr in frames])
    return int(np.argmax(p))


def findings_of(rec: dict[str, Any]) -> Any:
    """The clip's findings summary, where the bundle reports one (None otherwise)."""
    for holder in (rec, rec.get("video") or {}):
        if isinstance(holder, dict) and holder.get("findings") is not None:
            return holder["findings"]
    return None


def findings_text(findings: Any) -> str:
    """One line for a clip's findings summary (``engines.findings``: per finding a dict with
    ``mean``, ``max``, ``fraction``, ``present``); "" when the bundle reports none."""
    if not isinstance(findings, dict) or not findings:
        return ""
    present = [f"{k} (mean {v.get('mean', 0):.2f})" for k, v in findings.items()
               if isinstance(v, dict) and v.get("present")]
    return "Findings: " + (", ".join(present) if present else "none above 0.5") + "."


def score_into_exam(exam: Exam, zone: str, clip: str | Path, scorer: Scorer,
                    batch: int = 16, max_frames: int | None = None,
                    save: bool = True) -> tuple[ClipRecord, dict[str, Any]]:
    """Score one clip and add it to ``zone`` of ``exam`` (replacing an earlier entry of the
    same file). Never raises for a bad clip: the entry has ``ok`` false and ``error`` (for a
    clip that is not scorable, the gate's reason: it does not score the zone).

    Returns:
        (the zone's new clip record, the clip's pleura-score document)
    """
    clip = Path(clip)
    doc = score_paths([clip], scorer, batch, max_frames, echo=None)
    rec = doc["clips"][0] if doc["clips"] else {"ok": False, "error": "no clip found",
                                                "frames": []}
    scores_dir = exam.folder / "scores"
    scores_dir.mkdir(exist_ok=True)
    score_file = scores_dir / f"{zone}-{clip.name}.json"
    write_json_atomic(score_file, doc)
    entry = ClipRecord(file=exam.relative(clip), ok=bool(rec.get("ok")), error=rec.get("error"),
                       n_frames=int(rec.get("n_frames") or 0),
                       score_file=exam.relative(score_file))
    if rec.get("n_frames") and rec.get("scorable") is not False:
        v = rec["video"]
        entry.video_score = int(v["score"]) if entry.ok else None
        entry.probs = [float(p) for p in v["probs"]]
        k = key_frame(rec["frames"], int(v["score"]))
        if k is not None:
            entry.key_frame = int(rec["frames"][k]["index"])
            entry.key_boxes = rec["frames"][k]["boxes"]
        entry.findings = findings_of(rec)
    exam.add_clip(zone, entry, save=save)  # replaces an earlier entry of the same file
    return entry, doc
