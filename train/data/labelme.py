"""LabelMe polygon masks <-> label maps (0 = background, s + 1 = score s).

The paper's annotators drew masks with LabelMe (Roy et al. 2020, sec. III-C): one polygon per
region, labelled with the score "0".."3" of the marker it covers. A file is rasterised in file
order, later shapes on top, as LabelMe's own ``shapes_to_label`` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

LABELME_VERSION = "5.2.1"
SCORE_LABELS = ("0", "1", "2", "3")
_EDGE_TOL = 1.0  # LabelMe points may sit on the image border (x == width)


class MaskError(ValueError):
    """A LabelMe file that cannot be turned into a label map; the message names the file."""


def _line_of(text: str, needle: str, start: int = 0) -> tuple[int, int]:
    """1-based line of the first ``needle`` at or after character ``start`` (0 if absent)."""
    pos = text.find(needle, start)
    if pos < 0:
        return 0, start
    return text.count("\n", 0, pos) + 1, pos + 1


def read_labelme(path: str | Path, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Rasterise a LabelMe JSON file into a label map.

    Args:
        path: the ``.json`` file.
        image_hw: the frame size (H, W); defaults to the file's ``imageHeight``/``imageWidth``.

    Returns:
        (H, W) uint8 label map: 0 = background, s + 1 = score s (values 0..4).

    Raises:
        MaskError: unreadable JSON, an unknown label, a non-polygon shape, or a polygon outside
            the image. The message names the file and the line of the offending shape.
    """
    path = Path(path)
    try:
        text = path.read_text()
        doc = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise MaskError(f"{path}: not a readable LabelMe JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise MaskError(f"{path}: no 'shapes' list; expected a LabelMe JSON file")
    if image_hw is None:
        try:
            image_hw = (int(doc["imageHeight"]), int(doc["imageWidth"]))
        except (KeyError, TypeError, ValueError):
            raise MaskError(f"{path}: no imageHeight/imageWidth and no frame size given") from None
    h, w = image_hw
    out = np.zeros((h, w), np.uint8)
    cursor = text.find('"shapes"')
    for i, shape in enumerate(doc["shapes"]):
        label = str(shape.get("label", ""))
        line, cursor = _line_of(text, '"label"', cursor)
        where = f"{path}:{line}: shape {i}"
        if label not in SCORE_LABELS:
            raise MaskError(f"{where}: unknown label {label!r}; valid labels are "
                            f"{', '.join(SCORE_LABELS)} (the score of the marker it covers)")
        if shape.get("shape_type", "polygon") != "polygon":
            raise MaskError(f"{where}: shape_type {shape.get('shape_type')!r} is not supported; "
                            "draw polygons")
        pts = np.asarray(shape.get("points", []), dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise MaskError(f"{where}: a polygon needs at least 3 [x, y] points")
        bad = ((pts[:, 0] < -_EDGE_TOL) | (pts[:, 0] > w + _EDGE_TOL)
               | (pts[:, 1] < -_EDGE_TOL) | (pts[:, 1] > h + _EDGE_TOL))
        if bad.any():
            x, y = pts[np.argmax(bad)]
            raise MaskError(f"{where}: point ({x:g}, {y:g}) lies outside the {w}x{h} image; "
                            "was the mask drawn on a different frame size?")
        poly = np.round(pts).astype(np.int32)
        cv2.fillPoly(out, [poly], int(label) + 1)
    return out


def mask_to_shapes(label_map: np.ndarray, min_area: int = 12) -> list[dict]:
    """Polygons (LabelMe shapes) whose rasterisation in order rebuilds ``label_map``.

    Shapes are emitted in increasing label order, so later (higher-score) shapes overwrite
    lower ones where they touch, matching :func:`read_labelme`. Holes are not represented.

    Args:
        label_map: (H, W) uint8, 0 = background, s + 1 = score s.
        min_area: regions smaller than this many pixels are dropped.

    Returns:
        LabelMe shape dicts with integer pixel vertices.
    """
    shapes = []
    for value in range(1, 5):
        region = (label_map == value).astype(np.uint8)
        if not region.any():
            continue
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            if len(c) < 3 or cv2.contourArea(c) < min_area:
                continue
            shapes.append({"label": str(value - 1), "points": c[:, 0, :].tolist(),
                           "group_id": None, "shape_type": "polygon", "flags": {}})
    return shapes


def rasterise_shapes(shapes: Sequence[dict], image_hw: tuple[int, int]) -> np.ndarray:
    """Label map of ``shapes`` exactly as :func:`read_labelme` would draw them. (H, W) uint8."""
    out = np.zeros(image_hw, np.uint8)
    for s in shapes:
        cv2.fillPoly(out, [np.round(np.asarray(s["points"])).astype(np.int32)],
                     int(s["label"]) + 1)
    return out


def write_labelme(path: str | Path, shapes: Sequence[dict], image_hw: tuple[int, int],
                  image_path: str = "") -> None:
    """Write a LabelMe JSON file (no embedded image data)."""
    doc = {"version": LABELME_VERSION, "flags": {}, "shapes": list(shapes),
           "imagePath": image_path, "imageData": None,
           "imageHeight": int(image_hw[0]), "imageWidth": int(image_hw[1])}
    Path(path).write_text(json.dumps(doc, separators=(",", ":")).replace('{"label"', '\n{"label"'))
