"""What the live page says about its source, in plain words: Live, Paused, Stopped, ...

A frame is shown as live only while new frames keep coming and the source says it plays.
Anything else (paused, stopped, a source error, a reconnecting stream, a worker that went
quiet) is a *not live* state: the page greys the last frame out and says how old it is, so a
stale frame is never mistaken for the patient's current image.

Pure functions of the newest RESULT's metadata and the age of the newest scored frame; the
endpoints in :mod:`ui.live_routes` send the outcome with every frame and every empty long-poll.
"""

from __future__ import annotations

import math
from typing import Any

STATES: dict[str, str] = {
    "live": "Live",
    "paused": "Paused",
    "stopped": "Stopped",
    "ended": "Ended",
    "error": "Source error",
    "reconnecting": "Reconnecting",
    "connecting": "Connecting",
    "stalled": "No new frames",
}
"""Page state key -> the large label the page shows."""

SOURCE_TO_PAGE = {
    "playing": "live", "paused": "paused", "stopped": "stopped", "ended": "ended",
    "error": "error", "truncated": "error", "reconnecting": "reconnecting",
    "connecting": "connecting", "stalled": "stalled",
}
"""Capture's source states (:mod:`stream.capture`) -> page state keys."""

DETAILS = {
    "paused": "paused from this page; Resume continues where it stopped",
    "stopped": "stopped from this page; Start continues",
    "ended": "the clip ended",
    "truncated": "the file is cut short or damaged",
    "connecting": "opening the source",
    "reconnecting": "the stream broke off; trying again",
}

STALE_MIN_S = 2.0
STALE_MAX_S = 10.0


def stale_after(fps: float | None) -> float:
    """Seconds without a new frame after which a playing source is no longer shown as live:
    four frame intervals at the worker's rate, within [2, 10] s."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return STALE_MIN_S
    return min(STALE_MAX_S, max(STALE_MIN_S, 4.0 / fps))


def page_state(meta: dict[str, Any] | None, age_s: float | None) -> dict[str, Any]:
    """The page's source state.

    Args:
        meta: the newest RESULT's JSON (a scored frame, a re-sent one or a status result), or
            None before the first result.
        age_s: seconds since the newest *scored* frame arrived (None: none has).

    Returns:
        ``{"key", "label", "live": bool, "detail", "age_s", "has_frame": bool}``; ``live`` is
        True only for a playing source whose newest frame is younger than
        :func:`stale_after`; ``has_frame`` False means there is no image to show at all.
    """
    if meta is None:
        return _state("connecting", "waiting for the first result from the worker", None,
                      False)
    raw = str(meta.get("source_state") or "playing")
    key = SOURCE_TO_PAGE.get(raw, "error" if raw else "live")
    has_frame = age_s is not None and not meta.get("status_only")
    detail = str(meta.get("source_detail") or "") or DETAILS.get(raw, "")
    if key == "live":
        if not has_frame:
            key, detail = "connecting", "no frame scored yet"
        elif age_s is not None and age_s > stale_after(_num(meta.get("fps"))):
            key, detail = "stalled", (f"no new frame for {age_s:.0f} s (the worker may be "
                                      "restarting or loading a model)")
    if key == "error" and not detail:
        detail = f"source state {raw!r}"
    return _state(key, detail, age_s, has_frame)


def _state(key: str, detail: str, age_s: float | None, has_frame: bool) -> dict[str, Any]:
    age = None if age_s is None or not math.isfinite(age_s) else round(max(0.0, age_s), 1)
    return {"key": key, "label": STATES[key], "live": key == "live", "detail": detail,
            "age_s": age, "has_frame": has_frame}


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
