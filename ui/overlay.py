"""Overlay drawing: pure functions on numpy images, OpenCV only (no torch, no matplotlib).

Everything here takes and returns RGB ``uint8`` arrays (browsers show RGB); conversion to BGR
happens only at JPEG/PNG encoding time. The colours follow Roy et al. 2020, Fig. 4: the
Reg-STN's crop 1 (the one that is scored) is drawn red, crop 2 green. The segmentation mask is
coloured by score (label map 0 = background, s + 1 = score s) and alpha-blended on the frame.
A bundle with a findings head adds the findings (B-lines, consolidation, ...) in plain words:
:func:`finding_rows` turns a RESULT's into display rows for the page and the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from engines.findings import PRESENT_AT, finding_label

CROP1_RGB = (255, 0, 0)
"""Crop 1 (scored crop) box colour: red, as in the paper's Fig. 4."""
CROP2_RGB = (0, 255, 0)
"""Crop 2 box colour: green, as in the paper's Fig. 4."""

SCORE_RGB: tuple[tuple[int, int, int], ...] = (
    (40, 120, 255),   # score 0: healthy (blue)
    (255, 220, 0),    # score 1: yellow
    (255, 130, 0),    # score 2: orange
    (230, 0, 90),     # score 3: magenta-red
)
"""Colour of each score 0..3 in masks, timeline dots and probability bars."""

IGNORE_LABEL = 255


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 -> a new (H, W, 3) RGB uint8 array."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {a.dtype}")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    if a.ndim == 3 and a.shape[2] == 3:
        return a.copy()
    raise ValueError(f"expected a frame of shape (H, W) or (H, W, 3), got {a.shape}")


def clip_polygon(corners: np.ndarray | Sequence, width: float, height: float) -> np.ndarray:
    """Clip a convex polygon to the image rectangle ``[0, width-1] x [0, height-1]``
    (Sutherland-Hodgman).

    Args:
        corners: (K, 2) pixel coordinates (x, y) in drawing order.
        width, height: image size in pixels.

    Returns:
        (M, 2) float64 corners of the part inside the image (M = 0 when none is).
    """
    poly = [tuple(p) for p in np.asarray(corners, dtype=np.float64).reshape(-1, 2)]
    edges = ((0, 0.0, 1), (0, width - 1.0, -1), (1, 0.0, 1), (1, height - 1.0, -1))
    for axis, bound, sign in edges:  # keep the side where sign * (v - bound) >= 0
        out: list[tuple[float, float]] = []
        for k, cur in enumerate(poly):
            prev = poly[k - 1]
            d_cur, d_prev = sign * (cur[axis] - bound), sign * (prev[axis] - bound)
            if (d_cur >= 0) != (d_prev >= 0):  # this edge crosses the bound: keep the crossing
                f = d_prev / (d_prev - d_cur)
                out.append((prev[0] + f * (cur[0] - prev[0]), prev[1] + f * (cur[1] - prev[1])))
            if d_cur >= 0:
                out.append(cur)
        poly = out
        if not poly:
            break
    return np.array(poly, dtype=np.float64).reshape(-1, 2)


def polygon_area(corners: np.ndarray | Sequence) -> float:
    """Area of a simple polygon (shoelace formula); 0 for fewer than 3 corners."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    if len(c) < 3:
        return 0.0
    x, y = c[:, 0], c[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def outside_fraction(corners: np.ndarray | Sequence, width: int, height: int) -> float | None:
    """Share of a crop's area that lies outside the image (0 = inside, 1 = all outside);
    None when the corners are not 4 finite points or the crop has no area."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    if c.shape[0] != 4 or not np.all(np.isfinite(c)):
        return None
    area = polygon_area(c)
    if area <= 0:
        return None
    return float(np.clip(1.0 - polygon_area(clip_polygon(c, width, height)) / area, 0.0, 1.0))


def crop_notes(boxes: Sequence | None, width: int, height: int,
               min_fraction: float = 0.02) -> list[str]:
    """Plain sentences for crops partly outside the image: ``"crop 2: 35% outside the image
    (drawn clipped)"``; [] when every crop is inside (2% of its area is tolerated)."""
    notes = []
    for i, c in enumerate((boxes or [])[:2]):
        f = outside_fraction(c, width, height)
        if f is not None and f >= min_fraction:
            where = "outside the image" if f >= 0.995 else "outside the image (drawn clipped)"
            notes.append(f"crop {i + 1}: {100 * f:.0f}% {where}")
    return notes


def draw_quad(rgb: np.ndarray, corners: np.ndarray | Sequence, colour: tuple[int, int, int],
              thickness: int = 2) -> np.ndarray:
    """Draw a closed quadrilateral (an STN crop) in place, clipped to the image, and return
    the image.

    A crop that runs off the image is drawn as the part inside it, closed along the image
    border (:func:`clip_polygon`); :func:`crop_notes` says how much is outside.

    Args:
        rgb: (H, W, 3) uint8, modified in place.
        corners: (4, 2) pixel coordinates (x, y) in drawing order. Non-finite corners are
            skipped (the box is simply not drawn).
        colour: RGB colour.
        thickness: line width in pixels.
    """
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    if c.shape[0] != 4 or not np.all(np.isfinite(c)):
        return rgb
    c = clip_polygon(c, rgb.shape[1], rgb.shape[0])
    if len(c) < 2:
        return rgb
    pts = np.round(c).astype(np.int32).reshape(-1, 1, 2)
    # LINE_8, not anti-aliased: the box keeps its exact colour on any background.
    cv2.polylines(rgb, [pts], isClosed=True, color=colour, thickness=thickness,
                  lineType=cv2.LINE_8)
    return rgb


def draw_boxes(rgb: np.ndarray, boxes: Sequence | None, thickness: int = 2) -> np.ndarray:
    """Draw the Reg-STN crops in place: ``boxes[0]`` red (crop 1), ``boxes[1]`` green (crop 2).

    Crop 2 is drawn first so the scored crop 1 stays on top where they overlap.
    """
    if not boxes:
        return rgb
    colours = (CROP1_RGB, CROP2_RGB)
    for i in reversed(range(min(2, len(boxes)))):
        draw_quad(rgb, boxes[i], colours[i], thickness)
    return rgb


def mask_colours(labels: np.ndarray) -> np.ndarray:
    """Label map -> colour image: label s + 1 gets ``SCORE_RGB[s]``; 0 and 255 stay black.

    Args:
        labels: (H, W) uint8, 0 = background, 1..4 = score 0..3, 255 = ignore.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    lut = np.zeros((256, 3), dtype=np.uint8)
    for s, col in enumerate(SCORE_RGB):
        lut[s + 1] = col
    lab = np.ascontiguousarray(labels, dtype=np.uint8)
    return cv2.LUT(cv2.merge([lab, lab, lab]), lut.reshape(256, 1, 3))  # 10x numpy indexing


def blend_mask(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Alpha-blend the score-coloured mask onto the frame (new array).

    ``out = (1 - alpha) * frame + alpha * colour`` where the label is a score (1..4); elsewhere
    (background 0, ignore 255) the frame is unchanged. A label map of another size is resized
    to the frame with nearest-neighbour interpolation.

    Args:
        rgb: (H, W, 3) uint8.
        labels: (h, w) uint8 label map.
        alpha: opacity of the mask in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = rgb.shape[:2]
    lab: np.ndarray = np.asarray(labels, dtype=np.uint8)
    if lab.shape != (h, w):
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
    on = ((lab >= 1) & (lab <= len(SCORE_RGB))).astype(np.uint8)
    out = rgb.copy()
    if on.any():
        blended = cv2.addWeighted(rgb, 1.0 - alpha, mask_colours(lab), alpha, 0.0)
        cv2.copyTo(blended, on, out)
    return out


def blend_uncertainty(rgb: np.ndarray, unc: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Overlay a per-pixel uncertainty heat map (inferno colour map), new array.

    The opacity at each pixel is ``alpha * unc / 255`` so certain pixels leave the frame
    untouched and the most uncertain ones are shown at ``alpha``.

    Args:
        rgb: (H, W, 3) uint8.
        unc: (h, w) uint8, 0..255 (= std * 255 / 0.5 as the worker encodes it).
        alpha: maximal opacity in [0, 1].
    """
    h, w = rgb.shape[:2]
    u: np.ndarray = np.asarray(unc, dtype=np.uint8)
    if u.shape != (h, w):
        u = cv2.resize(u, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.cvtColor(cv2.applyColorMap(u, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    a = u.astype(np.float32) * np.float32(alpha / 255.0)
    return cv2.blendLinear(rgb, heat, 1.0 - a, a)


def put_label(rgb: np.ndarray, text: str, org: tuple[int, int],
              colour: tuple[int, int, int] = (255, 255, 255), scale: float = 0.5) -> np.ndarray:
    """Write ``text`` with a dark backing box at ``org`` (top-left), in place."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x, y = org
    cv2.rectangle(rgb, (x, y), (x + tw + 6, y + th + base + 6), (0, 0, 0), thickness=-1)
    cv2.putText(rgb, text, (x + 3, y + th + 3), font, scale, colour, 1, cv2.LINE_AA)
    return rgb


def format_probs(probs: Sequence[float]) -> str:
    """``[0.1, 0.2, 0.6, 0.1]`` -> ``"p .10 .20 .60 .10"`` (probabilities of scores 0..3)."""
    return "p " + " ".join(f"{float(p):.2f}".lstrip("0") if p < 1 else "1.0" for p in probs)


def draw_scores(rgb: np.ndarray, score: int | None, probs: Sequence[float] | None,
                video_score: int | None = None, video_probs: Sequence[float] | None = None,
                findings: str | None = None) -> np.ndarray:
    """Write the frame score/probabilities and the running video score in the top-left corner,
    and ``findings`` (a :func:`findings_caption`) below them when given.

    The text size follows the image width, so small display frames are not covered by it.
    """
    scale = float(np.clip(rgb.shape[1] / 1100.0, 0.3, 0.8))
    step = int(round(48 * scale)) + 2
    if score is not None and probs is not None:
        put_label(rgb, f"frame {score}  {format_probs(probs)}", (2, 2), SCORE_RGB[score], scale)
    if video_score is not None and video_probs is not None:
        put_label(rgb, f"video {video_score}  {format_probs(video_probs)}", (2, 2 + step),
                  SCORE_RGB[video_score], scale)
    if findings:
        put_label(rgb, findings, (2, 2 + 2 * step), scale=scale)
    return rgb


def _prob(v) -> float | None:
    """A probability from JSON, or None when absent or not a finite number in [0, 1]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if 0.0 <= v <= 1.0 else None


def finding_rows(result: dict) -> list[dict]:
    """A RESULT's findings as display rows, in the model's order; [] without a findings head.

    Args:
        result: RESULT JSON; uses ``findings`` ({name: p} of the frame) and
            ``video.findings`` ({name: {"mean", "present", ...}}, the running clip summary).

    Returns:
        ``[{"name", "label" (clinical words), "frame": p or None, "clip": mean or None,
        "present": clip mean >= 0.5}]``; malformed values become None.
    """
    frame, video = result.get("findings"), result.get("video")
    clip = video.get("findings") if isinstance(video, dict) else None
    frame = frame if isinstance(frame, dict) else {}
    clip = clip if isinstance(clip, dict) else {}
    rows = []
    for name in dict.fromkeys([*frame, *clip]):
        summary = clip.get(name) if isinstance(clip.get(name), dict) else {}
        rows.append({"name": str(name), "label": finding_label(str(name)),
                     "frame": _prob(frame.get(name)), "clip": _prob(summary.get("mean")),
                     "present": summary.get("present") is True})
    return rows


def findings_caption(rows: Sequence[dict], key: str = "frame") -> str:
    """The findings whose ``key`` value is >= 0.5, in words: ``"B-lines 82%, A-lines 61%"``,
    ``"no finding"`` when none is; "" when there are no rows (no findings head)."""
    if not rows:
        return ""
    shown = [f"{r['label']} {100 * r[key]:.0f}%" for r in rows
             if r.get(key) is not None and r[key] >= PRESENT_AT]
    return ", ".join(shown) if shown else "no finding"


def render_result(frame: np.ndarray, result: dict, show_mask: bool = True,
                  show_uncertainty: bool = False, show_text: bool = True,
                  mask_alpha: float = 0.4, show_boxes: bool | None = None,
                  mask: np.ndarray | None = None, unc: np.ndarray | None = None) -> np.ndarray:
    """Compose one displayed frame from a RESULT message.

    Args:
        frame: (H, W) grey uint8 display frame (the RESULT's ``image`` array).
        result: the RESULT JSON, :meth:`stream.messages.Result.to_json` (the fields are
            defined by :class:`stream.messages.Result`): uses ``boxes``, ``score``,
            ``probs``, ``video``, ``findings`` and ``crops``. Missing keys draw nothing.
        show_mask: blend the score-coloured segmentation mask.
        show_uncertainty: blend the uncertainty heat map (if the result has one).
        show_text: write the scores on the image.
        mask_alpha: opacity of the mask.
        show_boxes: draw the crop boxes; None follows the result's ``crops.show`` (the
            bundle's default: no boxes for whole-frame models or crops that do not
            localise), True when the result has no ``crops`` field.
        mask: the RESULT's ``mask`` array, (H, W) uint8 labels (0 = background, s + 1 =
            score s), or None.
        unc: the RESULT's ``unc`` array, (H, W) uint8 uncertainty, or None.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rgb = to_rgb(frame)
    if show_mask and _fits(mask, rgb):
        rgb = blend_mask(rgb, mask, mask_alpha)
    if show_uncertainty and _fits(unc, rgb):
        rgb = blend_uncertainty(rgb, unc)
    if show_boxes is None:
        show_boxes = boxes_by_default(result)
    if show_boxes:
        draw_boxes(rgb, result.get("boxes"))
    if show_text:
        video = result.get("video") or {}
        draw_scores(rgb, _int_or_none(result.get("score")), result.get("probs"),
                    _int_or_none(video.get("score")), video.get("probs"),
                    findings_caption(finding_rows(result)))
    return rgb


def _fits(a: np.ndarray | None, rgb: np.ndarray) -> bool:
    """``a`` is a non-empty (h, w) uint8 map (resized to the frame when drawn)."""
    return isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 2 and a.size > 0


def boxes_by_default(result: dict) -> bool:
    """Whether a result's crop boxes are drawn when nobody asked: its ``crops.show`` (set by
    the worker from the bundle, :func:`stream.result_fields.crops_meta`), True without one."""
    crops = result.get("crops")
    return bool(crops.get("show", True)) if isinstance(crops, dict) else True


def _int_or_none(v) -> int | None:
    try:
        s = int(v)
    except (TypeError, ValueError):
        return None
    return s if 0 <= s < len(SCORE_RGB) else None


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) RGB uint8 -> PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
