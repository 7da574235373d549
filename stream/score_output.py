"""``pleura score``'s output: the line per clip, the CSV, and the output-path check.

The JSON document itself is built by :func:`stream.score.score_paths` (schema:
``docs/score-json.md``); this module only formats clip records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.findings import finding_label
from stream.csvsafe import SafeDictWriter


def summary_line(i: int, n: int, rec: dict[str, Any]) -> str:
    """One line per clip for stdout."""
    head = f"[{i}/{n}] {rec['name']}:"
    if rec.get("scorable") is False:
        return f"{head} NOT SCORABLE, no video score ({rec['error']})"
    if rec.get("truncated") and rec.get("n_frames"):
        v = rec["video"]
        return (f"{head} TRUNCATED, {rec['n_frames']} frames before the cut scored (video "
                f"score {v['score']} of those only) ({rec['error']})")
    if not rec["ok"]:
        return f"{head} FAILED ({rec['error']})"
    v = rec["video"]
    probs = " ".join(f"{p:.2f}" for p in v["probs"])
    return (f"{head} {rec['n_frames']} frames, video score {v['score']} (probs {probs}), "
            f"{rec['timing']['fps']:.1f} frames/s{_findings_note(v)}")


def _findings_note(video: dict[str, Any]) -> str:
    """``", findings: B-lines, A-lines"`` (clip mean >= 0.5); "" without a findings head."""
    found = video.get("findings")
    if not found:
        return ""
    present = [finding_label(n) for n, s in found.items() if s["present"]]
    return f", findings: {', '.join(present) or 'none'}"


CSV_FIELDS = ("path", "ok", "error", "n_frames", "video_score", "p0", "p1", "p2", "p3",
              "max_frame_score", "fps", "truncated", "scorable", "scorable_reason",
              "scorable_share")
"""The CSV's fixed columns; a bundle with findings adds ``<name>_mean`` columns after them."""


def _gate_cells(clip: dict[str, Any]) -> dict[str, Any]:
    """The gate's columns: 1/0 (empty when no frame was decoded), the reason, the share."""
    scorable = clip.get("scorable")
    share = clip.get("scorable_share")
    return {"scorable": "" if scorable is None else int(scorable),
            "scorable_reason": clip.get("scorable_reason") or "",
            "scorable_share": "" if share is None else share}


def _clip_findings(clip: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return (clip.get("video") or {}).get("findings") or {}


def write_clips_csv(path: str | Path, clips: Sequence[dict[str, Any]]) -> None:
    """One row per clip: :data:`CSV_FIELDS`, then the clip mean of each finding (if any)."""
    names = list(dict.fromkeys(n for c in clips for n in _clip_findings(c)))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = SafeDictWriter(f, fieldnames=[*CSV_FIELDS, *(f"{n}_mean" for n in names)])
        w.writeheader()
        for c in clips:
            has_video = bool(c.get("n_frames")) and c["video"]["score"] is not None
            probs = c["video"]["probs"] if has_video else [""] * 4
            found = _clip_findings(c)
            frames = c.get("frames", []) if c.get("scorable") is not False else []
            w.writerow({
                "path": c["path"], "ok": int(c["ok"]), "error": c["error"] or "",
                "n_frames": c.get("n_frames", 0),
                "video_score": c["video"]["score"] if has_video else "",
                **{f"p{k}": probs[k] for k in range(4)},
                "max_frame_score": max((fr["score"] for fr in frames), default=""),
                "fps": c["timing"]["fps"], "truncated": int(bool(c.get("truncated"))),
                **_gate_cells(c),
                **{f"{n}_mean": found[n]["mean"] if n in found else "" for n in names},
            })


def destination_problem(path: str | Path, flag: str) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can.

    Checked before any clip is scored, so a typo in ``--json`` never costs a whole run.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        return (f"{flag} {p}: not a regular file (a folder, FIFO or device); give a file name "
                f"such as {p / 'scores.json' if p.is_dir() else 'scores.json'}")
    parent = p.parent
    if not parent.is_dir():
        return f"{flag} {p}: folder {parent} does not exist; create it (mkdir -p {parent})"
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        return f"{flag} {p}: no permission to write there; pick another path"
    return None
