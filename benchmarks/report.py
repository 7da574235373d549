"""Ratios, growth fits and the printed table of a ``pleura bench`` result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def ratios(values: Mapping[str, float | None], base: float | None) -> dict[str, float]:
    """Each candidate's value divided by the baseline's (speed-up when values are fps).

    Returns:
        {name: round(value / base, 3)} for every non-empty value; {} without a baseline.
    """
    if not base:
        return {}
    return {k: round(v / base, 3) for k, v in values.items() if v}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = a + b·x; {"intercept": a, "slope": b, "r2"}."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.size < 2 or np.ptp(xa) == 0:
        return {"intercept": float(ya.mean()) if ya.size else 0.0, "slope": 0.0, "r2": 0.0}
    b, a = np.polyfit(xa, ya, 1)
    pred = a + b * xa
    ss = float(((ya - ya.mean()) ** 2).sum())
    r2 = 1.0 - float(((ya - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return {"intercept": round(float(a), 4), "slope": round(float(b), 4), "r2": round(r2, 3)}


def stream_growth(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How latency and served throughput change with the number of concurrent streams."""
    n = [r["streams"] for r in rows]
    p50 = [r["paced"]["latency_ms"]["p50"] for r in rows]
    served = [r["paced"]["processed_fps"] for r in rows]
    fit = linear_fit(n, p50)
    cap = max((r["unpaced"]["fps"] for r in rows), default=0.0)
    pairs = ", ".join(f"{a}:{b:.1f}" for a, b in zip(n, served, strict=True))
    return {"latency_p50_vs_streams": fit, "max_unpaced_fps": cap,
            "text": (f"p50 latency ≈ {fit['intercept']:.1f} + {fit['slope']:.1f} ms per extra "
                     f"stream (r² {fit['r2']:.2f}); served frames/s "
                     f"{pairs} (streams:fps); "
                     f"streams saturate at the unpaced capacity ≈ {cap:.1f} frames/s")}


def resolution_growth(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-frame cost against source megapixels: decode + preprocessing grow, inference not."""
    mp = [r["megapixels"] for r in rows]
    dec = [r["decode"]["ms_per_frame"] for r in rows]
    pre = [r["preprocess_ms_p50"] for r in rows]
    inf = [r["pipeline"]["stage_ms"]["infer"] for r in rows]
    fd, fp, fi = linear_fit(mp, dec), linear_fit(mp, pre), linear_fit(mp, inf)
    return {"decode_ms_vs_mp": fd, "preprocess_ms_vs_mp": fp, "infer_ms_vs_mp": fi,
            "text": (f"decode ≈ {fd['intercept']:.2f} + {fd['slope']:.2f} ms/MP, preprocessing "
                     f"≈ {fp['intercept']:.2f} + {fp['slope']:.2f} ms/MP (linear in pixels); "
                     f"inference ≈ {np.mean(inf):.1f} ms whatever the size (input is "
                     f"letterboxed to the model size)")}


def _resources(rounds: Sequence[Mapping[str, Any]], name: str) -> tuple[str, str]:
    """Max CPU % and peak RSS (MB) of a candidate over the rounds."""
    cpu = max(rd[name].get("cpu_percent") or 0.0 for rd in rounds)
    rss = max(rd[name].get("peak_rss_mb") or 0.0 for rd in rounds)
    return f"{cpu:.0f}", f"{rss:.0f}"


def _f(v: Any, nd: int = 1) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def format_table(r: Mapping[str, Any]) -> str:
    """Human-readable summary of a bench result (the JSON holds everything)."""
    lines = [f"pleura bench — {r['machine']['cpu']['model']}, {r['machine']['cpu']['cores']} "
             f"cores, load {r['machine']['loadavg_start']} -> {r['machine']['loadavg_end']}",
             f"bundle {r['bundle']['path']} ({r['bundle']['frame_gmac']} GMAC/frame), "
             f"backend {r['backend']}, source {r['source']['path']}", ""]
    lines.append(f"decode (PyAV) {r['decode']['fps']} fps; preprocessing p50 "
                 f"{r['preprocess']['frame']['ms']['p50']} ms/frame")
    lines.append("")
    lines.append(f"{'model':<22}{'batch':>6}{'p50 ms':>10}{'p99 ms':>10}{'ms/frame':>10}"
                 f"{'fps':>9}")
    for name, rows in r["inference"].items():
        for row in rows or []:
            lines.append(f"{name:<22}{row['batch']:>6}{_f(row['ms']['p50'], 2):>10}"
                         f"{_f(row['ms']['p99'], 2):>10}{_f(row['ms_per_frame'], 2):>10}"
                         f"{_f(row['fps']):>9}")
    lines += ["", "frame scoring, unpaced (decode + preprocess + model), median of rounds:"]
    tp = r["throughput"]
    for name, fps in tp["median_fps"].items():
        ratio = r["ratios"].get(name)
        res = _resources(tp["rounds"], name)
        lines.append(f"  {name:<20}{_f(fps, 2):>9} frames/s  CPU {res[0]}%  peak RSS {res[1]} MB"
                     + (f"   x{ratio:.2f} vs baseline" if ratio and name != "baseline" else ""))
    if not r["baseline"]["available"]:
        lines.append(f"  baseline skipped: {r['baseline']['skipped_reason']}")
    p = r["paced"]
    lat = p.get("latency_ms") or {}
    lines += ["", f"real-time paced, 1 stream ({p.get('mode')}): latency p50 "
                  f"{_f(lat.get('p50'))} ms, p99 {_f(lat.get('p99'))} ms, served "
                  f"{_f(p.get('served_fraction'), 3)} of frames"]
    lines.append("")
    lines.append(f"{'streams':>8}{'served fps':>12}{'served %':>10}{'p50 ms':>9}{'p99 ms':>9}"
                 f"{'unpaced fps':>13}{'CPU %':>7}")
    for row in r["scaling"]["streams"]:
        pc = row["paced"]
        lines.append(f"{row['streams']:>8}{_f(pc['processed_fps']):>12}"
                     f"{_f(100 * pc['served_fraction']):>10}{_f(pc['latency_ms']['p50']):>9}"
                     f"{_f(pc['latency_ms']['p99']):>9}{_f(row['unpaced']['fps']):>13}"
                     f"{_f(pc['cpu_percent'], 0):>7}")
    lines.append(f"  {r['scaling']['streams_growth']['text']}")
    lines.append("")
    lines.append(f"{'source':>8}{'MP':>7}{'decode fps':>12}{'prep ms':>9}{'infer ms':>10}"
                 f"{'pipeline fps':>14}")
    for row in r["scaling"]["resolutions"]:
        lines.append(f"{row['name']:>8}{row['megapixels']:>7.2f}{_f(row['decode']['fps']):>12}"
                     f"{_f(row['preprocess_ms_p50'], 2):>9}"
                     f"{_f(row['pipeline']['stage_ms']['infer'], 1):>10}"
                     f"{_f(row['pipeline']['fps']):>14}")
    lines.append(f"  {r['scaling']['resolutions_growth']['text']}")
    c = r["limits"]["cpu"]
    lines += ["", f"physical limit: {c['formula']} = {c['peak_gflops_fp32']} GFLOP/s fp32 peak; "
                  f"{c['frame_gflop']} GFLOP/frame -> <= {c['max_fps_at_peak']} frames/s "
                  f"(numpy sgemm attains {c['sgemm_gflops_measured']} GFLOP/s here now)"]
    g = r["limits"].get("gpu_estimate")
    if g:
        for name, sc in g["scenarios"].items():
            b1, b8 = sc["b1"], sc[[k for k in sc if k.startswith("b") and k != "b1"][-1]]
            lines.append(f"GPU ESTIMATE, not measured ({g['gpu']}, {g.get('models', '')}; "
                         f"{name}: {sc['assumed']}): "
                         f"frame + seg {b1['frame_plus_seg_ms']} ms/frame at batch 1, "
                         f"~{b8['streams_30fps']} x 30-fps streams batched")
    t = r["targets"]["cpu_3x_baseline"]
    lines.append(f"target CPU >= 3x baseline: best {_f(t['best_ratio'], 2)}x ({t['best']}) -> "
                 f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def markdown(r: Mapping[str, Any]) -> str:
    """The result tables as Markdown (for docs/): ``python -m benchmarks.report b.json``."""
    out = ["| model | batch | p50 ms | p99 ms | ms/frame | frames/s |", "|---|---|---|---|---|---|"]
    for name, rows in r["inference"].items():
        for row in rows or []:
            out.append(f"| {name} | {row['batch']} | {_f(row['ms']['p50'], 1)} | "
                       f"{_f(row['ms']['p99'], 1)} | {_f(row['ms_per_frame'], 1)} | "
                       f"{_f(row['fps'], 2)} |")
    out += ["", "| frame scoring, unpaced (decode + preprocess + model) | frames/s (median) | "
                "per round | vs baseline | CPU % (max) | peak RSS MB |",
            "|---|---|---|---|---|---|"]
    for name, fps in r["throughput"]["median_fps"].items():
        per = ", ".join(_f(rd[name]["fps"], 2) for rd in r["throughput"]["rounds"])
        ratio = r["ratios"].get(name)
        cpu, rss = _resources(r["throughput"]["rounds"], name)
        out.append(f"| {name} | {_f(fps, 2)} | {per} | "
                   f"{'1 (reference)' if name == 'baseline' else _f(ratio, 2) + '×'} | "
                   f"{cpu} | {rss} |")
    out += ["", "| streams | mode | served frames/s | served % | latency p50 ms | p99 ms | "
                "unpaced frames/s (batch = streams) | CPU % |", "|---|---|---|---|---|---|---|---|"]
    for row in r["scaling"]["streams"]:
        pc = row["paced"]
        out.append(f"| {row['streams']} | {pc['mode']} | {_f(pc['processed_fps'])} | "
                   f"{_f(100 * pc['served_fraction'])} | {_f(pc['latency_ms']['p50'])} | "
                   f"{_f(pc['latency_ms']['p99'])} | {_f(row['unpaced']['fps'], 2)} | "
                   f"{_f(pc['cpu_percent'], 0)} |")
    out += ["", "| source frames | MP | decode fps | preprocess ms | inference ms | "
                "pipeline frames/s |", "|---|---|---|---|---|---|"]
    for row in r["scaling"]["resolutions"]:
        out.append(f"| {row['name']} ({row['hw'][1]}×{row['hw'][0]}) | {row['megapixels']} | "
                   f"{_f(row['decode']['fps'])} | {_f(row['preprocess_ms_p50'], 2)} | "
                   f"{_f(row['pipeline']['stage_ms']['infer'])} | "
                   f"{_f(row['pipeline']['fps'], 2)} |")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
