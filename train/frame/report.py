"""Text and Markdown renderings of :func:`train.frame.evaluate.evaluate` results."""

from __future__ import annotations

COLUMNS = ("S1", "K=1", "K=3", "K=5", "K=7", "video-ann.", "A=3", "A=4", "avg")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def table_markdown(rows: dict[str, dict], key: str = "micro_f1") -> str:
    """Table I layout: one row per model, F1 (%) per setting.

    Args:
        rows: {model name: evaluate()["table"]}.
        key: "micro_f1" (= accuracy, the paper's code) or "weighted_f1".
    """
    head = "| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    body = "".join(f"| {name} | " + " | ".join(_pct(t[c][key]) for c in COLUMNS) + " |\n"
                   for name, t in rows.items())
    return head + body


def details_markdown(results: dict[str, dict]) -> str:
    """Setting 1 details and localisation, one row per model.

    Args:
        results: {model name: evaluate() result (or its ``--json`` file)}.
    """
    out = ["| model | frames (stride) | weighted F1 | QWK | within-one | per-class F1 (0/1/2/3) "
           "| σ₁ / σ₂ | crop-1 spread | pointing: crop 1 vs Grad-CAM | crop 1, frozen initial "
           "translation |", "|---" * 10 + "|"]
    for name, res in results.items():
        s = res["setting1"]
        loc = res.get("localisation") or {}
        crop = (loc.get("stn_crop1") or {}).get("pointing")
        cam = (loc.get("gradcam") or {}).get("pointing")
        sig = (f"{loc['sigma1_mean']:.3f} / {loc['sigma2_mean']:.3f}"
               if "sigma1_mean" in loc else "–")
        point = f"{_pct(crop)} vs {_pct(cam)}"
        spread = f"{loc['t1_spread']:.3f}" if "t1_spread" in loc else "–"
        init = _pct((loc.get("stn_crop1_init") or {}).get("pointing"))
        per_class = " / ".join(f"{100 * v:.0f}" for v in s["per_class_f1"])
        out.append(f"| {name} | {s['n']} ({res.get('stride', 1)}) | {_pct(s['weighted_f1'])} "
                   f"| {s['qwk']:.3f} | {_pct(s['within_one'])} | {per_class} | {sig} "
                   f"| {spread} | {point} | {init} |")
    return "\n".join(out) + "\n"


def format_summary(res: dict) -> str:
    """A terminal summary of one evaluation."""
    s1 = res["setting1"]
    lines = [f"{res.get('model') or res.get('bundle')}: {res['n_frames']} frames of "
             f"{res['n_videos']} videos ({res['data']}, split {res['split']}, "
             f"stride {res['stride']})",
             f"Setting 1: micro F1 (= accuracy) {_pct(s1['micro_f1'])} %, weighted F1 "
             f"{_pct(s1['weighted_f1'])} %, macro F1 {_pct(s1['macro_f1'])} %, QWK "
             f"{s1['qwk']:.3f}, within-one {_pct(s1['within_one'])} %",
             f"confusion (rows truth 0..3, cols predicted): {s1['confusion']}",
             "micro F1 per setting: " + ", ".join(
                 f"{c} {_pct(res['table'][c]['micro_f1'])}" for c in COLUMNS)]
    loc = res.get("localisation")
    if loc:
        lines.append(f"σ1 {loc['sigma1_mean']:.3f}, σ2 {loc['sigma2_mean']:.3f} "
                     f"(|gap| {loc['sigma_gap']:.3f})")
        if "t1_spread" in loc:
            lines.append(f"crop-1 centre: mean ({loc['tx1_mean']:.3f}, {loc['ty1_mean']:.3f}), "
                         f"std ({loc['tx1_std']:.3f}, {loc['ty1_std']:.3f}), spread "
                         f"{loc['t1_spread']:.3f}; crop 2 spread {loc['t2_spread']:.3f} "
                         "(normalised coordinates)")
        for name in ("stn_crop1", "stn_crop1_init", "stn_crop1_mean", "gradcam"):
            d = loc.get(name)
            if d:
                held = (f", holds the score-setting finding {_pct(d['holds_score'])} % of "
                        f"{d['n_with_score']} frames with a score ≥ 1"
                        if d.get("holds_score") is not None else "")
                lines.append(f"{name}: inside sector {_pct(d['inside_sector'])} %, pointing "
                             f"{_pct(d['pointing'])} %, box precision {_pct(d['precision'])} % "
                             f"({d['n_with_target']} frames with a GT lesion){held}")
    lines.append(f"time {res['seconds']:.1f} s")
    return "\n".join(lines)
