"""What ``pleura export`` needs from a real-scan run (``pleura train real --final``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from train.real.fit import RealConfig, build, load_weights
from train.real.model import FINDING_NAMES

LIMITATIONS = [
    "Held out by source (leave-one-source-out over the 7 sources of labelled POCUS clips, "
    "docs/results/real.md) the recipe scores far below its grouped cross-validation: in this "
    "data the source nearly decides the label, so folds that share sources reward recognising "
    "the website. On a scanner it never saw, expect the leave-one-source-out figures; run "
    "`pleura adapt` on the site's unlabelled clips (re-estimates the score prior) and "
    "fine-tune on a few labelled ones (docs/fine-tune.md).",
    "Trained on a few dozen public clips (POCUS dataset, Born et al. 2021; severities of Gare "
    "et al. 2022) from a handful of devices and sites; scores on other scanners, presets and "
    "patients are less reliable: fine-tune on your own clips (docs/fine-tune.md).",
    "Frames inherit their clip's score (weak labels): the frame score is the clip-level "
    "severity the frame most resembles, not a frame annotation.",
    "Whole-frame model: the boxes are the whole frame (no localisation crops).",
    "Findings are trained from clip-level flags (present somewhere in the clip); effusion has "
    "too few examples to be meaningful.",
    "Video scores aggregate frame probabilities with a uninorm fitted on the training clips.",
    "A segmentation member copied from a simulator-trained bundle (--seg-from-bundle) gives "
    "masks that are not meaningful on real frames; export with --seg-hidden-note so the page "
    "hides them by default.",
]


def real_export_args(run: Path, real: dict[str, Any], training: dict[str, Any]
                     ) -> dict[str, Any]:
    """``export_bundle`` keyword arguments for a real run; records training facts in place."""
    cfg = replace(RealConfig.from_dict(real["config"]), init_from=None)
    model = build(cfg)
    load_weights(model, run / "frame-weights.npz")
    training.update({
        "frame_model": "real-frame (pleura train real): whole-frame CNN (paper trunk, width "
                       f"{cfg.width}) + SORD, per-frame intensity norm '{cfg.norm}', findings head",
        "real_clips": f"{real['n_clips']} clips ({real['n_labelled']} with a severity)",
        "licence": real["licence"],
        "research_only": real["research_only"],
        "uninorm": f"head {real.get('uninorm_head')}, fitted on the training clips",
        "simulated_data": cfg.sim_data or "none",
        "simulated_share": cfg.sim_share if cfg.sim_data else 0.0,
    })
    training["licences"] = ("every training clip's licence is listed in the model card; the "
                            "bundle carries the most restrictive: " + real["licence"])
    intended = (
        "Research on real-time lung-ultrasound scoring (Roy et al., IEEE TMI 2020). **Not a "
        "medical device and not for diagnosis**: scores and findings must not inform any "
        "clinical decision.")
    card = {"intended_use": intended,
            "frame_model": "real-scan frame model: the paper's CNN on the whole frame with "
                           "per-frame intensity standardisation, SORD score head and a "
                           "findings head, trained on real clips (pleura train real)",
            "limitations": LIMITATIONS, "licence": real["licence"],
            "research_only": real["research_only"], "training_clips": real["clips"]}
    return {"model": model, "finding_names": list(FINDING_NAMES), "card": card,
            "extra_files": {"frame-weights.npz": run / "frame-weights.npz"}}
