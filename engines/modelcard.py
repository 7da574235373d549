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
    """Markdown model card from a bundle manifest (see :func:`engines.bundle.write_manifest`)."""
    models = manifest.get("models", {})
    fm = models.get("frame", {})
    lines = [
        f"# Model card: pleura bundle `{manifest.get('name', '?')}`",
        "",
        f"Created {manifest.get('created_at', '?')} by {manifest.get('created_by', '?')}; "
        f"bundle schema {manifest.get('schema_version')}.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Models",
        "",
        f"- `{fm.get('file')}`: frame scorer "
        f"`{manifest.get('training', {}).get('frame_model', 'reg-stn')}` (Roy et al. 2020: "
        "CNN + Reg-STN + SORD). Input "
        f"`{_fmt(manifest.get('inputs', {}).get('frame'))}`; outputs: probabilities of the "
        "scores 0-3 (crop 1) and the two crop transforms theta1, theta2.",
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
    lines += ["", "## Limitations", "",
              "- Trained on simulated B-mode data (plus only commercially licensed real clips, "
              "if listed above); expect a domain gap on real scanners.",
              "- The crops are weakly supervised (no box labels) and show where the model "
              "looked, not validated findings.",
              "- Video scores aggregate frame probabilities with a uninorm fitted on simulated "
              "videos.", ""]
    return "\n".join(lines)
