"""``MODEL_CARD.md`` of a bundle, rendered from its manifest (pure string formatting).

``pleura export`` calls :func:`render_model_card` so the card always says what the manifest
says: intended use, training data and licences, the exact commands, the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

INTENDED_USE = (
    "Research and demonstration of real-time lung-ultrasound scoring (Roy et al., IEEE TMI "
    "2020). **Not a medical device and not for diagnosis**: scores, boxes and masks must not "
    "inform any clinical decision. The models were trained mostly or only on simulated data "
    "(pleura's simulator), so their figures on real scans are low and uncalibrated."
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, separators=(", ", ": "))[:300] + "`"
    return str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "", depth: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and depth > 1:
            out.update(_flatten(v, key + ".", depth - 1))
        else:
            out[key] = v
    return out


def _table(d: Mapping[str, Any]) -> list[str]:
    if not d:
        return ["(none recorded)"]
    rows = ["| item | value |", "|---|---|"]
    rows += [f"| {k} | {_fmt(v)} |" for k, v in _flatten(d).items()]
    return rows


def render_model_card(manifest: Mapping[str, Any]) -> str:
    """Markdown model card from a bundle manifest (see :func:`engines.bundle.write_manifest`).

    Long because the card is one Markdown template, written in the order it reads.
    """
    models = manifest.get("models", {})
    fm = models.get("frame", {})
    card = manifest.get("card") or {}
    lines = [
        f"# Model card: pleura bundle `{manifest.get('name', '?')}`",
        "",
        f"Created {manifest.get('created_at', '?')} by {manifest.get('created_by', '?')}; "
        f"bundle schema {manifest.get('schema_version')}.",
        "",
        "## Intended use",
        "",
        card.get("intended_use", INTENDED_USE),
        "",
    ]
    if card.get("licence"):
        lines += ["## Licence", "", _licence_text(card), ""]
    trained = manifest.get("training", {}).get("frame_model", "reg-stn")
    what = card.get("frame_model",
                    f"frame scorer `{trained}` (Roy et al. 2020: CNN + Reg-STN + SORD)")
    outputs = ", ".join(f"`{k}`" for k in fm.get("outputs", {}))
    lines += [
        "## Models",
        "",
        f"- `{fm.get('file')}`: {what}. Input "
        f"`{_fmt(manifest.get('inputs', {}).get('frame'))}`; outputs: {outputs}.",
    ]
    if fm.get("int8_file"):
        lines.append(f"- `{fm['int8_file']}`: static int8 (QDQ) quantisation of the frame model; "
                     f"the CPU backend runs `{fm.get('cpu_default')}` by default.")
    for m in models.get("seg", []):
        mc = f", MC-dropout variant `{m['mc_file']}`" if m.get("mc_file") else ""
        lines.append(f"- `{m['file']}`: segmentation member `{m.get('name')}` "
                     f"({m.get('arch', '?')}){mc}; classes background + scores 0-3.")
    if manifest.get("aggregator"):
        lines.append(f"- `{manifest['aggregator']['file']}`: uninorm video aggregation "
                     "(4 learned neutral elements).")
    lines += ["", "## Training data and licences", ""]
    lines += _table(manifest.get("training", {}))
    if card.get("training_clips"):
        lines += ["", f"### Training clips ({len(card['training_clips'])}), each with its licence",
                  "", "| clip | score | licence | source |", "|---|---|---|---|"]
        lines += [f"| {c['file']} | {'' if c.get('score') is None else c['score']} | "
                  f"{c['license']} | {c.get('source', '')} |" for c in card["training_clips"]]
    lines += ["", "## Exact commands", "", "```"]
    lines += list(manifest.get("commands", [])) or ["(none recorded)"]
    lines += ["```", "", "## Metrics", ""]
    ev = manifest.get("evaluation", {})
    if not ev:
        lines.append("(none recorded)")
    for section, figures in ev.items():
        lines += [f"### {section}", ""]
        lines += _table(figures) if isinstance(figures, Mapping) else [_fmt(figures)]
        lines.append("")
    limitations = card.get("limitations") or [
        "Trained on simulated B-mode data (plus only commercially licensed real clips, "
        "if listed above); expect a domain gap on real scanners.",
        "The crops are weakly supervised (no box labels) and show where the model "
        "looked, not validated findings.",
        "Video scores aggregate frame probabilities with a uninorm fitted on simulated "
        "videos."]
    lines += ["", "## Limitations", "", *(f"- {x}" for x in limitations), ""]
    return "\n".join(lines)


def _licence_text(card: Mapping[str, Any]) -> str:
    if card.get("research_only"):
        return (f"**{card['licence']} — for non-commercial research use only.** This bundle was "
                "trained on clips whose licences are non-commercial; it carries the most "
                "restrictive of them (every training clip and its licence are listed below).")
    return (f"{card['licence']}: trained only on clips that allow commercial use and on "
            "simulated data (every training clip and its licence are listed below).")
