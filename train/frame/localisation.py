"""Weak localisation: Reg-STN crop boxes vs Grad-CAM boxes (Roy et al. 2020, Fig. 4).

Geometry is in model-input pixels (224x224, edge-based: pixel i covers [i, i+1)).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from train.synth.annotators import MIN_MARKER_PIXELS, frame_score
from train.synth.scan_geometry import largest_region_hull

_CORNERS = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=np.float64)


def theta_box(theta: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Corners of a crop in input pixels: (x, y) = θ · (u, v, 1) at u, v = ±1, then
    x_pix = (x + 1) / 2 · W (``align_corners=False``).

    Args:
        theta: (2, 3) transform.
        hw: input (H, W).

    Returns:
        (4, 2) float64 corners (top-left, top-right, bottom-right, bottom-left of the crop).
    """
    xy = _CORNERS @ np.asarray(theta, dtype=np.float64).T  # (4, 2) normalised
    return (xy + 1.0) / 2.0 * np.array([hw[1], hw[0]], dtype=np.float64)


def polygon_mask(corners: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool raster of a polygon given by (K, 2) pixel corners."""
    m = np.zeros(hw, np.uint8)
    cv2.fillPoly(m, [np.round(corners * 16).astype(np.int32)], 1, shift=4)
    return m.astype(bool)


def sector_mask(image: np.ndarray, threshold: int = 0) -> np.ndarray:
    """The scan sector: convex hull of the nonzero region of a letterboxed frame.

    Blur, threshold, keep the largest component and take its convex hull, so dark rib
    shadows that reach the sector's edge still count as inside. Deep, attenuated parts of a
    single frame can be black: pass the per-video maximum (:func:`video_sector`).

    Args:
        image: (H, W) uint8 (a frame, or the maximum over a clip's frames).

    Returns:
        (H, W) bool.
    """
    hull = largest_region_hull((cv2.GaussianBlur(image, (7, 7), 0) > threshold).astype(np.uint8))
    return np.zeros(image.shape, bool) if hull is None else hull


def video_sector(frames: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 frames of one clip -> (H, W) bool sector of their maximum."""
    return sector_mask(np.asarray(frames).max(0))


def heat_box(heat: np.ndarray, rel_threshold: float = 0.5) -> np.ndarray:
    """Axis-aligned box of the largest component of ``heat ≥ rel_threshold · max(heat)``.

    Returns:
        (4, 2) corners like :func:`theta_box`; the whole image when the map is flat zero.
    """
    h, w = heat.shape
    if not np.isfinite(heat).all() or heat.max() <= 0:
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    m = (heat >= rel_threshold * heat.max()).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[k, :4])
    return np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], np.float64)


def holds_score(box: np.ndarray, label: np.ndarray, scale: float, sector: np.ndarray,
                score: int) -> float:
    """1.0 when the markers inside ``box`` (an (H, W) bool mask) alone give the frame its score
    ``score`` (≥ 1) by the simulator's frame-score rule
    (:func:`train.synth.annotators.frame_score`, its pixel thresholds carried to the
    letterboxed frame by ``scale``), 0.0 when they give a lower one; NaN for score-0 frames
    (nothing to hold).

    The pointing game counts a box that touches any finding; this asks whether the box holds
    the finding that *sets* the frame's score, which is what a prediction from crop 1 needs.
    """
    if score <= 0:
        return float("nan")
    inside = np.where(box, label, 0).astype(np.uint8)
    got = frame_score(inside, int(sector.sum()),
                      min_pixels=max(1, round(MIN_MARKER_PIXELS * scale ** 2)))
    return float(got >= score)


def box_scores(corners: np.ndarray, sector: np.ndarray, target: np.ndarray | None,
               label: np.ndarray | None = None, scale: float = 1.0, score: int = 0,
               ) -> dict[str, float]:
    """How a box sits on the frame.

    Args:
        label: the frame's letterboxed label map (0 = background, s + 1 = score s) and
            ``scale`` its letterbox scale, for ``holds_score``; ``score`` the frame's score.

    Returns:
        inside_frac: |box ∩ sector| / |box|; hit: box overlaps ``target`` (pointing game,
        1/0, NaN when there is no target); precision: |box ∩ target| / |box|; holds_score:
        :func:`holds_score` (NaN without ``label``).
    """
    box = polygon_mask(corners, sector.shape)
    area = max(int(box.sum()), 1)
    res = {"inside_frac": float((box & sector).sum() / area), "hit": float("nan"),
           "precision": float("nan"), "holds_score": float("nan")}
    if target is not None and target.any():
        inter = int((box & target).sum())
        res["hit"] = float(inter > 0)
        res["precision"] = inter / area
    if label is not None:
        res["holds_score"] = holds_score(box, label, scale, sector, score)
    return res


class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017) on a CNN layer, with forward/backward hooks.

    L = ReLU(Σ_k α_k A_k), α_k = mean over (i, j) of ∂y_c/∂A_k(i, j), upsampled to the input.

    Args:
        model: maps (B, 3, H, W) -> (B, C) logits (e.g. ``RegSTN.cnn``, run on the full frame).
        layer: the module whose output A is used (e.g. ``cnn.trunk.blocks[-1]``).
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        self.model, self._acts, self._grads = model, None, None
        self._h = [layer.register_forward_hook(self._save_act),
                   layer.register_full_backward_hook(self._save_grad)]

    def _save_act(self, _m, _i, out) -> None:
        self._acts = out

    def _save_grad(self, _m, _gi, go) -> None:
        self._grads = go[0]

    def __call__(self, x: torch.Tensor, target: torch.Tensor | None = None) -> np.ndarray:
        """(B, 3, H, W) -> (B, H, W) float32 heat maps in [0, 1] for class ``target``
        (default: the predicted class)."""
        self.model.eval()
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            cls = logits.argmax(1) if target is None else target
            self.model.zero_grad(set_to_none=True)
            logits.gather(1, cls[:, None]).sum().backward()
        alpha = self._grads.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((alpha * self._acts).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear",
                                              align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        return cam.detach().cpu().numpy()

    def close(self) -> None:
        for h in self._h:
            h.remove()
