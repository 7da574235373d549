"""B-mode rendering of a :class:`~train.synth.scene.World` seen through a drifting probe.

Per frame, a convolution model of B-mode image formation (the idea behind Jensen's Field II,
reduced to a 2-D Gaussian point-spread function on the beam grid):

1. complex Gaussian scatterers (chest wall fixed to the probe, lung shifted by *sliding*),
   partly renewed every frame (temporal decorrelation);
2. amplitude = scatterers * sqrt(echogenicity) * depth attenuation (with partial TGC);
3. blurred by an anisotropic Gaussian point-spread function (short axially, wide laterally);
   the envelope |.| of a blurred complex Gaussian field is Rayleigh-distributed speckle;
4. log compression ``20 log10(env)`` into a dynamic range, gain, gamma -> 0..255;
5. scan conversion to the convex fan / linear rectangle (black outside the sector).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from train.synth.geometry import Geometry, random_geometry
from train.synth.scene import build_world, smooth_noise

#: Neighbour-zone scores, weighted towards a one-step change (transitions inside a video).
_NEIGHBOUR_P = np.array([[0, 5, 3, 1], [4, 0, 4, 1], [2, 4, 0, 4], [1, 2, 5, 0]], float)


@dataclass(frozen=True)
class VideoPlan:
    """Everything random about one video, drawn up front (so a seed fixes the video)."""

    probe: str
    target: int
    zones: list[tuple[int, int, int]]
    xs: np.ndarray          # (T,) int: first visible world line per frame (probe drift)
    slides: np.ndarray      # (T,) int: extra lung offset per frame (lung sliding)
    dys: np.ndarray         # (T,) float: breathing shift in image rows
    psf: tuple[float, float]  # (axial, lateral) sigma in beam rows / lines
    atten: float            # attenuation over the full depth, nepers
    tgc: float              # fraction of it compensated by time-gain control
    dyn_range: float        # dB
    gain: float             # dB added before compression
    gamma: float
    rho: float              # frame-to-frame speckle correlation
    noise_floor: float
    smooth: float           # scanner speckle-reduction blur after compression (beam pixels)
    ribs: list[tuple[float, float]]
    pleura_depth: float


def smoothstep(x: np.ndarray) -> np.ndarray:
    """3x^2 - 2x^3 on [0, 1], clipped outside: an ease-in/ease-out probe move."""
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def plan_video(rng: np.random.Generator, probe: str, target: int, beam_hw: tuple[int, int],
               n_frames: int, fps: float, transition_p: float = 0.5) -> VideoPlan:
    """Draw zones, probe drift, breathing and imaging settings for one video."""
    D, L = beam_hw
    Uw, M = 3 * L, L
    t = np.arange(n_frames, dtype=np.float64)
    jitter = rng.uniform(0, 2.5) * smooth_noise(n_frames + 2, rng.uniform(4, 12), rng)[:n_frames]
    zones = [(0, Uw, target)]
    ramp = np.zeros(n_frames)
    if rng.random() < transition_p and n_frames >= 8:
        other = int(rng.choice(4, p=_NEIGHBOUR_P[target] / _NEIGHBOUR_P[target].sum()))
        delta = rng.uniform(0.4, 0.95) * L
        reveal = rng.uniform(0.3, min(1.0, delta / L))  # how much of the window ends up over it
        border = int(M + L + delta - reveal * L)
        zones = [(0, border, target), (border, Uw, other)]
        t0, dur = rng.uniform(0.1, 0.6) * n_frames, rng.uniform(0.15, 0.4) * n_frames
        ramp = delta * smoothstep((t - t0) / max(dur, 1.0))
        if rng.random() < 0.3:  # and back again
            t1 = rng.uniform(t0 + dur, max(t0 + dur + 1, n_frames))
            ramp -= delta * smoothstep((t - t1) / max(dur, 1.0))
        if rng.random() < 0.5:  # mirror: the other zone on the left, drifting left
            zones = [(0, Uw - border, other), (Uw - border, Uw, target)]
            ramp = -ramp
        if rng.random() < 0.5:  # play backwards: start over the other zone
            ramp = ramp[::-1].copy()
    xs = np.clip(np.round(M + ramp + jitter), 0, Uw - L).astype(np.int64)
    breath = fps * rng.uniform(2.5, 5.0)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * t / breath + phase)
    slide_amp = rng.uniform(0.8, 3.5) * (0.4 if target >= 2 else 1.0)
    slides = np.round(slide_amp * wave).astype(np.int64)
    slides = np.clip(slides, -xs, Uw - L - xs)
    dys = rng.uniform(0.0, 1.5) * np.sin(2 * np.pi * t / breath + phase + 0.5)
    ribs = []
    for side in (0, 1):
        if rng.random() < 0.6:
            ribs.append((M + side * L + rng.uniform(-0.1, 0.06) * L * (1 - 2 * side),
                         rng.uniform(0.07, 0.2) * L))
    pleura_frac = rng.uniform(0.14, 0.33) if probe == "convex" else rng.uniform(0.18, 0.42)
    return VideoPlan(
        probe=probe, target=target, zones=zones, xs=xs, slides=slides, dys=dys,
        psf=(rng.uniform(0.5, 1.2), rng.uniform(0.7, 1.7)),
        atten=rng.uniform(0.8, 3.0), tgc=rng.uniform(0.2, 0.85),
        dyn_range=rng.uniform(40, 60), gain=rng.uniform(-10, 2), gamma=rng.uniform(0.9, 2.0),
        rho=rng.uniform(0.8, 0.97), noise_floor=rng.uniform(0.0005, 0.006),
        smooth=rng.uniform(0.4, 1.4),
        ribs=ribs, pleura_depth=pleura_frac * D)


def render_video(plan: VideoPlan, size: int, rng: np.random.Generator,
                 beam_hw: tuple[int, int]) -> tuple[Geometry, Iterator[tuple[np.ndarray,
                                                                            np.ndarray]]]:
    """Build the world and geometry, then yield ``(frame, label_map)`` per frame.

    Returns:
        The geometry and an iterator of ((H, W) uint8 grey frame, (H, W) uint8 label map with
        0 = background, s + 1 = score s, zero outside the sector).
    """
    D, L = beam_hw
    geom = random_geometry(plan.probe, size, beam_hw, rng)
    world = build_world(D, L, plan.zones, plan.pleura_depth, plan.ribs, rng)
    Uw = world.tissue.shape[1]
    z_tis = rng.standard_normal((2, D, Uw), dtype=np.float32)
    z_lung = rng.standard_normal((2, D, Uw), dtype=np.float32)
    # Fresh noise per frame: random windows of one bank (shifted white noise is independent).
    bank = rng.standard_normal((3, 2 * D, 2 * L), dtype=np.float32)
    offsets = rng.integers(0, [D, L], size=(len(plan.xs), 2))
    depth = np.linspace(0, 1, D, dtype=np.float32)[:, None]
    atten = np.exp(-plan.atten * (1 - plan.tgc) * depth).astype(np.float32)
    sig_ax, sig_lat = plan.psf
    keep = np.float32(plan.rho)
    fresh_w = np.float32(np.sqrt(1 - plan.rho ** 2))
    gamma_lut = np.round(255 * (np.arange(256) / 255.0) ** plan.gamma).astype(np.uint8)
    visible = world.shadow > 0.5
    db_per_ln = np.float32(20.0 / np.log(10.0))

    def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ref = None
        for t, (x, s, dy) in enumerate(zip(plan.xs, plan.slides, plan.dys, strict=True)):
            oy, ox = offsets[t]
            fresh = bank[:, oy:oy + D, ox:ox + L]
            xl = x + s
            region = world.lung_region[:, xl:xl + L]
            shadow = world.shadow[:, x:x + L]
            echo = np.where(region, world.lung[:, xl:xl + L], world.tissue[:, x:x + L])
            amp = cv2.sqrt(np.maximum(echo, 0)) * (shadow * atten)
            parts = []
            for c in (0, 1):
                z = np.where(region, z_lung[c, :, xl:xl + L], z_tis[c, :, x:x + L])
                z = (keep * z + fresh_w * fresh[c]) * amp
                parts.append(cv2.GaussianBlur(z, (0, 0), sigmaX=sig_lat, sigmaY=sig_ax))
            env = cv2.magnitude(parts[0], parts[1])
            env += np.float32(plan.noise_floor) * np.abs(fresh[2]) + np.float32(1e-6)
            db = cv2.log(env) * db_per_ln
            if ref is None:
                ref = float(np.percentile(db, 99.5)) - plan.gain
            x8 = (db - np.float32(ref - plan.dyn_range)) * np.float32(255.0 / plan.dyn_range)
            beam = cv2.LUT(cv2.convertScaleAbs(np.maximum(x8, 0)), gamma_lut)
            if plan.smooth > 0.3:
                beam = cv2.GaussianBlur(beam, (0, 0), plan.smooth)
            img = geom.to_image(beam, dy=float(dy))
            lab = np.where(region & visible[:, x:x + L], world.lung_label[:, xl:xl + L], 0)
            lab_img = geom.to_image(lab.astype(np.uint8), dy=float(dy), nearest=True)
            yield img, lab_img

    return geom, frames()
