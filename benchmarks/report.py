"""Ratios, growth fits, the printed table and the Markdown tables of ``pleura bench`` results.

The tables in ``docs/performance.md`` and ``docs/performance/bench.md`` are *generated* from
the JSON files, never typed: each sits between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` markers, and

    python -m benchmarks.report update-docs --results benchmarks/results

rewrites every block from the JSON named in :data:`DOC_BLOCKS`. ``python -m benchmarks.report
FILE.json`` prints one result's detail tables.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
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


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def load_line(r: Mapping[str, Any]) -> str:
    """One line: the load verdict, pre-flight figures, the busiest phase, background load."""
    ld = r.get("load") or {}
    pre = ld.get("preflight") or {}
    busy = (pre.get("others_busy") or {}).get("mean")
    la = (pre.get("before") or {}).get("loadavg")
    phases = ld.get("phases") or {}
    worst = max(phases.items(), key=lambda kv: (kv[1].get("others_busy") or {}).get("mean")
                or 0.0, default=(None, {}))
    wb = (worst[1].get("others_busy") or {}).get("mean")
    bg = (ld.get("background_load") or {}).get("processes", 0)
    verdict = {"quiet": "QUIET", "intentional": f"CONTENDED ON PURPOSE ({bg} busy-loop "
                                                 f"processes)"}.get(
        ld.get("contention"), "CONTENDED — do not quote as a quiet figure")
    return (f"load: {verdict}; before the run: load average {la}, other processes "
            f"{_f(None if busy is None else 100 * busy, 0)} % of the CPU; busiest phase "
            f"{worst[0]}: {_f(None if wb is None else 100 * wb, 0)} %")


def format_table(r: Mapping[str, Any]) -> str:
    """Human-readable summary of a bench result (the JSON holds everything)."""
    m = r["machine"]
    lines = [f"pleura bench — {m['cpu']['model']}, {m['cpu']['cores']} cores "
             f"({', '.join(m['cpu']['simd'])})", load_line(r),
             f"bundle {r['bundle']['path']}, backend {r['backend']}, "
             f"source {r['source']['path']}", ""]
    if r.get("contended"):
        lines += ["*** CONTENDED: these figures measure the machine's other work as much as "
                  "the code ***", ""]
    lines.append(f"decode (PyAV) {r['decode']['fps']} fps; preprocessing p50 "
                 f"{r['preprocess']['frame']['ms']['p50']} ms/frame")
    lines += ["", *markdown_models(r).splitlines(), "",
              "frame scoring, unpaced (decode + preprocess + model), median of rounds:",
              *markdown_throughput(r).splitlines()]
    lines += baseline_lines(r.get("baselines") or {})
    if r.get("seg"):
        lines += ["", "segmentation lane (models alone):", *markdown_seg(r).splitlines(),
                  *baseline_lines(r["seg"].get("baselines") or {})]
    if r.get("paced") or r.get("paced_baselines"):
        lines += ["", "real-time, one stream:", *markdown_paced(r).splitlines()]
    if r.get("scaling"):
        lines += ["", *markdown_scaling(r).splitlines()]
    lines += ["", *markdown_limits(r).splitlines()]
    for which, t in r["targets"].items():
        verdict = {True: "met", False: "NOT met",
                   None: f"n/a, no ratio ({t.get('no_ratio_reason') or 'no baseline'})"}[t["met"]]
        lines.append(f"target {which}: best {_x(t['best_ratio'])} ({t['best']}) -> {verdict}")
    return "\n".join(lines)


def baseline_lines(baselines: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """One line per baseline: which network, parity and MACs against the bundle graph, or why
    it did not run (and so has no ratio)."""
    out = []
    for name, b in baselines.items():
        gate = b.get("same_model") or {}
        par = b.get("parity") or {}
        info = b.get("info") or {}
        check = ""
        if par or gate.get("macs_baseline") is not None:
            mb, mg = gate.get("macs_baseline"), gate.get("macs_bundle")
            rel = gate.get("macs_rel_diff")
            check = (f"parity max |Δ| {_f(gate.get('parity_max_abs_diff'), 8)} (≤ "
                     f"{gate.get('parity_tolerance')}), MACs {_f(mb and mb / 1e9, 4)} G vs "
                     f"bundle {_f(mg and mg / 1e9, 4)} G ("
                     f"{_f(None if rel is None else 100 * rel, 3)} %, ≤ "
                     f"{_f(100 * gate.get('mac_tolerance', 0.01), 0)} %)")
        if b.get("available"):
            out.append(f"{indent}{name} baseline: {info.get('model')}; {info.get('forward')}; "
                       f"{check} -> same model, ratios computed")
            if b.get("compile"):
                out.append(f"{indent}  {b.get('what')}")
        else:
            out.append(f"{indent}{name} baseline: no ratio: {b.get('skipped_reason')}"
                       + (f" [{check}]" if check else ""))
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _pct(u: Mapping[str, Any] | None) -> str:
    if not u:
        return "-"
    return f"{u['pct_of_limit']:.0f} % ({u['pct_of_limit_used_macs']:.0f} %)"


def markdown_throughput(r: Mapping[str, Any]) -> str:
    """Unpaced frame scoring: every candidate vs the naive and the tuned baseline."""
    tp = r["throughput"]
    util = ((r.get("limits") or {}).get("utilisation") or {}).get("frame_pipeline", {})
    rows = []
    for name, fps in tp["median_fps"].items():
        per = ", ".join(_f(rd[name]["fps"], 2) for rd in tp["rounds"])
        cpu, rss = _resources(tp["rounds"], name)
        rows.append([name, _f(fps, 2), per, _x(r["ratios"]["vs_naive"].get(name)),
                     _x(r["ratios"]["vs_tuned"].get(name)), cpu, rss, _pct(util.get(name))])
    return _table(["candidate (decode + preprocess + model)", "frames/s (median)", "per round",
                   "vs naive", "vs tuned", "CPU % (max)", "peak RSS MB",
                   "% of limit (used MACs)"], rows)


def markdown_models(r: Mapping[str, Any]) -> str:
    """Each frame model alone (random inputs), with ratios and % of the machine's limit."""
    util = ((r.get("limits") or {}).get("utilisation") or {}).get("frame_model_only", {})
    rm = r.get("ratios_model_only") or {"vs_naive": {}, "vs_tuned": {}}
    rows = []
    for name, rs in (r.get("inference") or {}).items():
        prefix = "ort_" + name.removeprefix("frame_") if name.startswith("frame_") else name
        for row in rs or []:
            key = f"{prefix}_b{row['batch']}"
            rows.append([key, row["batch"], _f(row["ms"]["p50"], 1), _f(row["ms"]["p99"], 1),
                         _f(row["ms_per_frame"], 1), _f(row["fps"], 2),
                         _x(rm["vs_naive"].get(key)), _x(rm["vs_tuned"].get(key)),
                         _pct(util.get(key))])
    return _table(["model alone", "batch", "p50 ms", "p99 ms", "ms/frame", "frames/s",
                   "vs naive", "vs tuned", "% of limit (used MACs)"], rows)


def markdown_seg(r: Mapping[str, Any]) -> str:
    s = r["seg"]
    util = ((r.get("limits") or {}).get("utilisation") or {}).get("seg_model_only", {})
    rows = [[k, _f(v, 2), _x(s["ratios"]["vs_naive"].get(k)), _x(s["ratios"]["vs_tuned"].get(k)),
             _pct(util.get(k))] for k, v in s["fps"].items()]
    return _table([f"seg ensemble ({', '.join(s['members'])}) alone", "frames/s", "vs naive",
                   "vs tuned", "% of limit (used MACs)"], rows)


def markdown_paced(r: Mapping[str, Any]) -> str:
    """One real-time stream: pleura live's processes and the PyTorch baselines' loops."""
    runs = {}
    if r.get("paced"):
        runs[f"pleura ({r['paced'].get('mode')})"] = r["paced"]
    for k, v in (r.get("paced_baselines") or {}).items():
        runs[f"{k} (in-process loop, batch 1)"] = v
    rows = []
    for name, p in runs.items():
        lat = p.get("latency_ms") or {}
        sf = p.get("served_fraction")
        rows.append([name, _f(p.get("source_fps")), _f(p.get("processed_fps")),
                     _f(None if sf is None else 100 * sf), _f(lat.get("p50")),
                     _f(lat.get("p99")), _f(p.get("cpu_percent"), 0),
                     _f(p.get("peak_rss_mb"), 0)])
    return _table(["real-time, 1 stream", "source fps", "scored fps", "% of frames scored",
                   "e2e p50 ms", "e2e p99 ms", "CPU %", "RSS MB"], rows)


def markdown_scaling(r: Mapping[str, Any]) -> str:
    rows = []
    for row in r["scaling"]["streams"]:
        pc = row["paced"]
        rows.append([row["streams"], pc["mode"], _f(pc["processed_fps"]),
                     _f(100 * pc["served_fraction"]), _f(pc["latency_ms"]["p50"]),
                     _f(pc["latency_ms"]["p99"]), _f(row["unpaced"]["fps"], 2),
                     _f(pc["cpu_percent"], 0)])
    out = _table(["streams", "mode", "served frames/s", "served %", "latency p50 ms", "p99 ms",
                  "unpaced frames/s (batch = streams)", "CPU %"], rows)
    rows = [[f"{row['name']} ({row['hw'][1]}×{row['hw'][0]})", row["megapixels"],
             _f(row["decode"]["fps"]), _f(row["preprocess_ms_p50"], 2),
             _f(row["pipeline"]["stage_ms"]["infer"]), _f(row["pipeline"]["fps"], 2)]
            for row in r["scaling"]["resolutions"]]
    return out + "\n\n" + _table(["source frames", "MP", "decode fps", "preprocess ms",
                                  "inference ms", "pipeline frames/s"], rows)


def markdown_limits(r: Mapping[str, Any]) -> str:
    """MACs of the executed graphs, the measured peak, the ceiling."""
    lim = r["limits"]
    c = lim["cpu"]
    rows = []
    members = (r.get("bundle") or {}).get("seg_members") or []
    for name, m in lim["macs"].items():
        for i, mm in enumerate(m if isinstance(m, list) else [m]):
            if mm:
                label = (f"seg member {members[i] if i < len(members) else i}"
                         if isinstance(m, list) else name)
                rows.append([label, _f(mm["gmac"], 4), _f(mm["gmac_used"], 4),
                             _f(mm["gmac_int8"], 4)])
    peak = c["peak"]
    how = (f"measured by benchmarks/fma_peak.c ({peak.get('fp32_mode')} / "
           f"{peak.get('int8_mode')}, {peak.get('threads')} threads)" if peak.get("measured")
           else f"NOT measured ({peak.get('reason')}): nominal formula")
    return (_table(["graph (batch 1)", "GMAC executed", "GMAC used (rows reaching an output)",
                    "of which int8"], rows) +
            f"\n\nPeak: fp32 {_f(c['fp32_gflops'])} GFLOP/s, int8 {_f(c['int8_gops'])} GOP/s, "
            f"{how}; nominal from /proc/cpuinfo {c['nominal_fp32_gflops']} GFLOP/s fp32 "
            f"({c['nominal_formula']}). Frame model (fp32 graph) ceiling at peak: "
            f"{_f(c.get('max_fps_at_peak'))} frames/s executed, "
            f"{_f(c.get('max_fps_at_peak_used_macs'))} frames/s if only used rows were computed.")


def markdown(r: Mapping[str, Any]) -> str:
    """Every detail table of one result (for docs/performance/bench.md)."""
    parts = [load_line(r), markdown_models(r), markdown_throughput(r)]
    if r.get("seg"):
        parts.append(markdown_seg(r))
    if r.get("paced") or r.get("paced_baselines"):
        parts.append(markdown_paced(r))
    if r.get("scaling"):
        parts.append(markdown_scaling(r))
    parts.append(markdown_limits(r))
    return "\n\n".join(parts)


def _source(r: Mapping[str, Any], label: str) -> str:
    return (f"*{label}: `{r['command']}`, {r['created_at']}, "
            f"{r['machine']['cpu']['model']} × {r['machine']['cpu']['cores']} cores. "
            f"{load_line(r)}.*")


def headline(quiet: Mapping[str, Any]) -> str:
    """The headline table: every ORT candidate vs both baselines, pipeline and model alone."""
    tp = quiet["throughput"]["median_fps"]
    mo = _model_only_index(quiet)
    rmo = quiet.get("ratios_model_only") or {"vs_naive": {}, "vs_tuned": {}}
    util = (quiet["limits"].get("utilisation") or {})
    rows = []
    for name in tp:
        rows.append([name, _f(tp[name], 1), _x(quiet["ratios"]["vs_naive"].get(name)),
                     _x(quiet["ratios"]["vs_tuned"].get(name)), _f(mo.get(name), 1),
                     _x(rmo["vs_naive"].get(name)), _x(rmo["vs_tuned"].get(name)),
                     _pct(util.get("frame_model_only", {}).get(name))])
    head = ["candidate", "pipeline frames/s", "vs naive", "vs tuned", "model alone frames/s",
            "vs naive", "vs tuned", "% of limit, model alone (used MACs)"]
    t = quiet["targets"]["cpu_3x_tuned"]
    key = next((k for k in t if k.startswith("ort_int8_b")), None)
    goal = (f"\n\nTarget ORT int8 at the largest batch ≥ 3× the tuned baseline (pipeline): "
            f"{key} {_x(t.get(key))} → "
            f"{'met' if (t.get(key) or 0) >= 3.0 else 'NOT met'}" if key and t.get(key)
            else "")
    return _table(head, rows) + goal + "\n\n" + _source(quiet, "measured by")


def _model_only_index(r: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, rows in (r.get("inference") or {}).items():
        prefix = "ort_" + key.removeprefix("frame_") if key.startswith("frame_") else key
        for row in rows:
            out[f"{prefix}_b{row['batch']}"] = row["fps"]
    return out


def contended_table(quiet: Mapping[str, Any], busy: Mapping[str, Any]) -> str:
    """How each candidate degrades under the fixed background load: frames/s quiet vs busy."""
    q, b = quiet["throughput"]["median_fps"], busy["throughput"]["median_fps"]
    n = (busy.get("load", {}).get("background_load") or {}).get("processes", "?")
    rows = []
    for name in q:
        if name in b:
            rows.append([name, _f(q[name], 1), _f(b[name], 1), f"{100 * b[name] / q[name]:.0f} %"
                         if q[name] else "-", _x(busy["ratios"]["vs_naive"].get(name)),
                         _x(busy["ratios"]["vs_tuned"].get(name))])
    return (_table(["candidate", "quiet frames/s", f"with {n} busy-loop processes",
                    "retained", "vs naive (loaded)", "vs tuned (loaded)"], rows)
            + "\n\n" + _source(busy, "contended run"))


def live_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per result: its bundle's live end-to-end figures (``paced``)."""
    rows = []
    for label, r in results.items():
        p = r.get("paced") or {}
        lat = p.get("latency_ms") or {}
        sf = p.get("served_fraction")
        rows.append([label, p.get("mode", "-"), _f(p.get("source_fps")),
                     _f(None if sf is None else 100 * sf, 2), _f(lat.get("p50")),
                     _f(lat.get("p99")), _f(p.get("cpu_percent"), 0),
                     _f(p.get("peak_rss_mb"), 0), load_line(r).split(";")[0]])
    return _table(["bundle", "mode", "source fps", "% scored", "e2e p50 ms", "e2e p99 ms",
                   "CPU %", "RSS MB", "load"], rows) + "\n\n" + "\n".join(
        f"*{label}: `{r['command']}`, {r['created_at']}.*" for label, r in results.items())


def ui_table(u: Mapping[str, Any]) -> str:
    """The live page in Chromium (``python -m benchmarks.browser --json``)."""
    la = u.get("load_avg") or []
    row = [_f(u.get("mean_fps")), _f(u.get("ui_results_per_s")),
           f"{_f(u.get('display_p50_ms'), 0)} / {_f(u.get('display_p95_ms'), 0)}",
           f"{_f(u.get('latency_p50_ms'), 0)} / {_f(u.get('latency_p95_ms'), 0)}",
           ", ".join(f"{v:.2f}" for v in la)]
    return (_table(["displayed fps (mean)", "results at the UI /s", "display latency p50 / p95 ms",
                    "end-to-end p50 / p95 ms", "load average at the end"], [row])
            + f"\n\n*`{u.get('command')}` ({u.get('bundle')}, source {u.get('source')}).*")


def _label(r: Mapping[str, Any]) -> str:
    """A result's row label: bundle name, "runtime only" for the dummy, the background load."""
    name = "dummy (runtime only)" if r["bundle"].get("dummy") else r["bundle"]["name"]
    n = ((r.get("load") or {}).get("background_load") or {}).get("processes", 0)
    return name + (f", with {n} busy-loop processes" if n else "")


DOC_BLOCKS: dict[str, tuple[Sequence[str], Callable[..., str]]] = {
    "headline": (("quiet-regstn",), headline),
    "limits": (("quiet-regstn",), markdown_limits),
    "seg": (("quiet-regstn",), markdown_seg),
    "paced": (("quiet-regstn",), markdown_paced),
    "contended": (("quiet-regstn", "contended-regstn"), contended_table),
    "detail": (("quiet-regstn",), markdown),
    "ui": (("quiet-ui",), ui_table),
    "live": (("quiet-regstn", "quiet-default", "quiet-cnn-sord", "quiet-dummy",
              "contended-regstn"), lambda *rs: live_table({_label(r): r for r in rs})),
}
"""Marker name -> (result files it needs, without .json; the function that renders them)."""


def render_blocks(results: Path) -> dict[str, str]:
    """Every :data:`DOC_BLOCKS` block whose JSON files exist under ``results``."""
    out = {}
    for name, (files, fn) in DOC_BLOCKS.items():
        paths = [results / f"{f}.json" for f in files]
        have = [p for p in paths if p.is_file()]
        if name == "live" and have:
            out[name] = fn(*[json.loads(p.read_text()) for p in have])
        elif len(have) == len(paths):
            out[name] = fn(*[json.loads(p.read_text()) for p in paths])
    return out


def update_markdown(text: str, blocks: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace the body of each ``<!-- bench:NAME -->…<!-- /bench:NAME -->`` block.

    Returns:
        (new text, names replaced).
    """
    done = []
    for name, body in blocks.items():
        pat = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)}"
                         rf" -->)", re.S)
        text, n = pat.subn(lambda m, body=body: m.group(1) + body.rstrip() + "\n" + m.group(2),
                           text)
        if n:
            done.append(name)
    return text, done


def update_docs(results: Path, docs: Sequence[Path]) -> dict[str, list[str]]:
    """Regenerate the marked tables of ``docs`` from the JSON files in ``results``."""
    blocks = render_blocks(results)
    out = {}
    for doc in docs:
        text, done = update_markdown(doc.read_text(), blocks)
        doc.write_text(text)
        out[str(doc)] = done
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["update-docs"]:
        import argparse

        p = argparse.ArgumentParser(prog="python -m benchmarks.report update-docs")
        p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
        p.add_argument("docs", nargs="*", type=Path,
                       default=[Path("docs/performance.md"), Path("docs/performance/bench.md")])
        a = p.parse_args(argv[1:])
        for doc, names in update_docs(a.results, a.docs).items():
            print(f"{doc}: regenerated {', '.join(names) or 'nothing (no JSON yet)'}")
        return 0
    if len(argv) != 1:
        print("usage: python -m benchmarks.report FILE.json | update-docs [--results DIR] "
              "[DOC.md ...]", file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
