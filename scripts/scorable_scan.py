"""The "not scorable" gate (:mod:`engines.scorable`) over real and synthetic clips: false alarms
on lung clips, and what it catches.

Usage:
    python scripts/scorable_scan.py [--data ../shared/data] [--features] [--pleura]

Every clip is decoded with :func:`stream.sources.decode_file` (the decoding path of
``pleura score``) and every frame goes through :class:`engines.scorable.ClipGate`, as
``pleura score`` does. The sets and what each must give:

- ``pocus``: the 124 POCUS clips (``MANIFEST.csv``; all lung scans, labelled or not): scorable;
- ``screen``: the device-screen lung recording (UI around a small scan area): scorable;
- ``demo``: the shipped demo clips (two simulated, one real): scorable;
- ``devices``: the eye scans, phantoms and resolution targets of five vendors: not a lung view;
- ``synthetic``: black, uniform grey, random-noise and probe-in-the-air clips, written as mp4 in
  a temporary folder: no image / noise.

Prints one row per clip (a markdown table), the summary and the command's wall time; exit 0 when
every clip meets its expectation, 1 otherwise. ``--features`` adds the spread of each measure per
set (the margins behind the thresholds); ``--pleura`` the pleural-line measure that was tried and
rejected (docs/reliability.md says why).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.scorable import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    NO_IMAGE,
    NOISE,
    NOT_LUNG,
    SCORABLE,
    ClipGate,
    GlobeShape,
)
from stream.sources import decode_file  # noqa: E402

EXPECT = {"pocus": {SCORABLE}, "screen": {SCORABLE}, "demo": {SCORABLE},
          "devices": {NOT_LUNG}, "synthetic": {NO_IMAGE, NOISE}}


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """Grey (H, W) uint8 frames -> an H.264 mp4, as a scanner's recording would be."""
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.stack([f] * 3, -1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def probe_in_air(rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """A probe held in the air: the lens's ring-down (bright bands at the top, fading) over a
    dark sector with a little electronic noise."""
    img = rng.integers(0, 6, (h, w)).astype(np.float32)
    for k, level in enumerate((200, 140, 90, 50)):
        y = 6 + 9 * k
        img[y:y + 3, 40:w - 40] += level + rng.normal(0, 8, (3, w - 80))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_clips(folder: Path, n: int = 30) -> list[Path]:
    """Black, uniform grey, random noise and probe in the air: ``n`` frames each, 480 x 640."""
    rng = np.random.default_rng(0)
    makers = {
        "black.mp4": lambda: np.zeros((480, 640), np.uint8),
        "uniform-grey.mp4": lambda: np.full((480, 640), 128, np.uint8),
        "random-noise.mp4": lambda: rng.integers(0, 256, (480, 640), dtype=np.uint8),
        "probe-in-air.mp4": lambda: probe_in_air(rng),
    }
    return [write_mp4(folder / name, [make() for _ in range(n)]) for name, make in makers.items()]


def clip_sets(data: Path, tmp: Path) -> list[tuple[str, Path]]:
    """(set, clip) for every clip of the scan, in table order."""
    with open(data / "pocus" / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        pocus = [data / "pocus" / row["file"] for row in csv.DictReader(f)]
    devices = sorted(p for p in (data / "devices").iterdir()
                     if p.suffix.lower() not in (".md", ".txt"))
    demo = sorted(p for p in (ROOT / "stream" / "demo").iterdir()
                  if p.suffix.lower() in (".mp4", ".mov"))
    return ([("pocus", p) for p in pocus] + [("devices", p) for p in devices]
            + [("screen", p) for p in sorted((data / "device-screen").glob("*.mp4"))]
            + [("demo", p) for p in demo] + [("synthetic", p) for p in synthetic_clips(tmp)])


def gate_clip(path: Path, pleura: bool = False) -> tuple[ClipGate, list, float]:
    """Every frame of ``path`` through a fresh gate, as ``pleura score`` does (every
    ``CHECK_EVERY``-th checked); (gate, the checks made, seconds spent in the gate)."""
    gate, checks, spent = ClipGate(), [], 0.0
    for df in decode_file(path):
        t = time.perf_counter()
        c = gate.update(df.image)
        spent += time.perf_counter() - t
        if c is not None:
            checks.append((c, pleural_line(df.image) if pleura else None))
    return gate, checks, spent


def print_row(kind: str, path: Path, gate: ClipGate) -> bool:
    """One markdown row; returns whether the clip met its set's expectation."""
    v = gate.verdict()
    got = SCORABLE if v.scorable else v.reason
    ok = got in EXPECT[kind]
    counts = ", ".join(f"{r} {n}" for r, n in v.counts.items() if n)
    print(f"| {kind} | `{path.name}` | {gate.n_seen} ({v.n_checked}) | {100 * v.share:.0f} % | "
          f"{counts} | "
          f"{got} | {'yes' if ok else '**NO**'} |")
    return ok


def spread(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    return "-" if v.size == 0 else f"{v.min():.3f} / {np.median(v):.3f} / {v.max():.3f}"


def globe_closeness(g: GlobeShape) -> float:
    """How near a blob comes to the globe rule: the smallest of its four measures as a share
    of the rule's threshold (>= 1: called a globe)."""
    th = DEFAULT_THRESHOLDS
    return min(g.area / th.globe_area, g.solidity / th.globe_solidity,
               g.aspect / th.globe_aspect, g.enclosure / th.globe_enclosure)


def print_features(per_set: dict[str, list]) -> None:
    """Per set: min / median / max of each measure over its frames (checks that measured it)."""
    print("\n| set | area | height | bright | corr | globe area | solidity | aspect | "
          "enclosure | globe closeness |\n|---|---|---|---|---|---|---|---|---|---|")
    for kind, checks in per_set.items():
        cs = [c for c, _ in checks]
        g = [c.globe for c in cs if c.globe is not None]
        print(f"| {kind} | {spread([c.area for c in cs])} | {spread([c.height for c in cs])} | "
              f"{spread([c.bright for c in cs])} | "
              f"{spread([c.corr for c in cs if c.corr is not None])} | "
              + " | ".join(spread([getattr(x, k) for x in g])
                           for k in ("area", "solidity", "aspect", "enclosure"))
              + f" | {spread([globe_closeness(x) for x in g])} |")


def print_closest(per_clip: dict[str, list]) -> None:
    """The lung clip that comes nearest the globe rule, and its share of near frames."""
    best = (0.0, "", 0.0)
    for name, checks in per_clip.items():
        close = [globe_closeness(c.globe) for c, _ in checks if c.globe is not None] or [0.0]
        if max(close) > best[0]:
            best = (max(close), name, float(np.mean([v >= 0.9 for v in close])))
    print(f"\nclosest POCUS frame to the globe rule: {best[1]} at {best[0]:.3f} of the "
          f"threshold; {100 * best[2]:.0f} % of that clip's frames at >= 0.9")


def pleural_line(image: np.ndarray) -> float:
    """The pleural-line measure that was tried (not used by the gate): the strongest bright,
    roughly horizontal ridge (a dynamic-programming path, slope <= 1 px per column) in the upper
    half of the image region, under at least 4-14 % of its height of echoic tissue, as a share
    of the region's 90th grey-level percentile."""
    import cv2

    from engines.preprocess import to_grey
    from engines.scorable import _crop, image_region

    grey = to_grey(image)
    region = image_region(grey)
    if region is None:
        return 0.0
    crop, mask = _crop(grey, region)
    k = 128 / max(crop.shape)
    size = (max(16, round(crop.shape[1] * k)), max(16, round(crop.shape[0] * k)))
    x = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    x /= float(np.percentile(x[m > 0], 90)) + 4.0
    s = cv2.blur(cv2.GaussianBlur(x, (0, 0), 1.0), (7, 1))
    h = s.shape[0]

    def band(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:  # mean of rows y+a..y+b
        cs = np.cumsum(np.vstack([np.zeros((1, s.shape[1])), s * m]), 0)
        cm = np.cumsum(np.vstack([np.zeros((1, s.shape[1])), m]), 0)
        lo, hi = np.clip(np.arange(h) + a, 0, h), np.clip(np.arange(h) + b + 1, 0, h)
        return (cs[hi] - cs[lo]) / np.maximum(cm[hi] - cm[lo], 1), (cm[hi] - cm[lo]) / (b - a + 1)

    (up, cu), (dn, cd) = band(-max(5, h // 20), -max(2, h // 50)), band(max(2, h // 50),
                                                                        max(5, h // 20))
    tissue, ct = band(-max(6, round(0.14 * h)), -max(3, round(0.04 * h)))
    valid = (m > 0) & (cu > 0.9) & (cd > 0.9) & (ct > 0.9)
    r = np.where(valid & (tissue >= 0.2), np.maximum(s - np.maximum(up, dn), 0), 0.0)
    r = r[max(1, int(0.06 * h)):max(int(0.06 * h) + 2, h // 2)]
    score = r[:, 0].copy()
    for c in range(1, r.shape[1]):
        score = np.maximum(score, np.maximum(np.r_[-np.inf, score[:-1]],
                                             np.r_[score[1:], -np.inf]) - 0.01) + r[:, c]
    return float(score.max() / max(1, valid.any(axis=0).sum()))


def print_pleura(per_set: dict[str, list]) -> None:
    """Pleural-line measure: per POCUS clip its median; per other clip likewise."""
    print("\nPleural-line measure (clip median of the frames):")
    for kind, by_clip in per_set.items():
        med = sorted((float(np.median([p for _, p in checks])), name)
                     for name, checks in by_clip.items())
        if kind == "pocus":
            lo = ", ".join(f"{n} {v:.3f}" for v, n in med[:5])
            print(f"  pocus: {len(med)} clips, min {med[0][0]:.3f}, median "
                  f"{med[len(med) // 2][0]:.3f}; lowest: {lo}")
        else:
            for v, n in med:
                print(f"  {kind} {n}: {v:.3f}")
    lung = [float(np.median([p for _, p in c])) for c in per_set.get("pocus", {}).values()]
    for kind in ("devices",):
        worst = max((float(np.median([p for _, p in c])) for c in per_set.get(kind, {}).values()),
                    default=None)
        if worst is not None and lung:
            print(f"  POCUS clips at or below the highest {kind} clip ({worst:.3f}): "
                  f"{sum(v <= worst for v in lung)} of {len(lung)}")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    per_set: dict[str, list] = defaultdict(list)
    per_clip: dict[str, dict[str, list]] = defaultdict(dict)
    misses, counts, gate_s, n_frames, n_checked = [], defaultdict(lambda: [0, 0]), 0.0, 0, 0
    print("| set | clip | frames (checked) | scorable | checked frames by reason | verdict | "
          "as expected |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="pleura-gate-") as tmp:
        for kind, path in clip_sets(Path(args.data), Path(tmp)):
            gate, checks, spent = gate_clip(path, args.pleura)
            gate_s += spent
            n_frames, n_checked = n_frames + gate.n_seen, n_checked + len(checks)
            per_set[kind] += checks
            per_clip[kind][path.name] = checks
            ok = print_row(kind, path, gate)
            counts[kind][0] += ok
            counts[kind][1] += 1
            if not ok:
                misses.append(f"{kind}/{path.name}")
    print("\n" + "; ".join(f"{k}: {a} of {n} as expected" for k, (a, n) in counts.items()))
    print(f"not as expected: {', '.join(misses) or 'none'}")
    print(f"gate: {n_frames} frames, {n_checked} checked, {1000 * gate_s / max(1, n_checked):.2f}"
          f" ms per check, {1000 * gate_s / max(1, n_frames):.2f} ms per frame (one process); "
          f"wall time {time.perf_counter() - t0:.0f} s for "
          f"`{' '.join(['python', *sys.argv])}`")
    if args.features:
        print_features(per_set)
        print_closest(per_clip["pocus"])
    if args.pleura:
        print_pleura(per_clip)
    return 0 if not misses else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                    help="the shared data folder (pocus/, devices/, device-screen/)")
    ap.add_argument("--features", action="store_true", help="print the spread of each measure")
    ap.add_argument("--pleura", action="store_true",
                    help="also measure the pleural-line candidate (slower)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
