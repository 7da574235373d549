"""The shipped default bundle on real clips, and "bring your own clips" end to end (issue #13).

Real POCUS clips from ../shared/data (skipped, naming the path, when absent).
"""

import csv
import json
import os
from pathlib import Path

from engines.bundle import default_bundle_path, load_bundle
from tests._shared_data import POCUS, needs_pocus

pytestmark = needs_pocus


def _score(paths, bundle, out):
    from stream.cli import main

    rc = main(["score", *map(str, paths), "--bundle", str(bundle), "--json", str(out)])
    return rc, json.loads(Path(out).read_text())


def test_default_bundle_scores_the_healthy_and_the_severe_clip_right(tmp_path):
    # not hard-coded: the video score of the default bundle's engine on the real clips
    rc, rep = _score([POCUS / "Reg-NormalLungs.mp4", POCUS / "Cov-Atlas-pleural2.mp4"],
                     default_bundle_path(), tmp_path / "s.json")
    assert rc == 0
    by_name = {c["name"]: c for c in rep["clips"]}
    assert by_name["Reg-NormalLungs.mp4"]["video"]["score"] == 0
    assert by_name["Cov-Atlas-pleural2.mp4"]["video"]["score"] >= 2


def test_default_bundle_card_lists_its_licence_and_training_clips():
    b = load_bundle(default_bundle_path())
    card = (b.path / "MODEL_CARD.md").read_text()
    manifest = b.manifest
    clips = manifest["card"]["training_clips"]
    assert manifest["card"]["licence"] in card
    for c in clips:
        assert f"| {c['file']} |" in card and c["license"] in card
    if manifest["card"]["research_only"]:
        assert "non-commercial research use only" in card


GIFS = {"Reg-Atlas.gif": 0, "Cov-Atlas-Day+2.gif": 1, "Cov-Atlas+(44).gif": 2,
        "Cov-Atlas+(45).gif": 3}


def test_fine_tune_the_default_bundle_on_own_clips_and_export(tmp_path):
    """The documented recipe of docs/fine-tune.md, with tiny settings."""
    from stream.cli import main

    clips = tmp_path / "clips"
    clips.mkdir()
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "score", "group", "b_lines"])
        for i, (name, score) in enumerate(GIFS.items()):
            os.symlink(POCUS / name, clips / f"clip{i}.gif")
            w.writerow([f"clip{i}.gif", score, f"P{i // 2}", int(score >= 1)])
    run = tmp_path / "run"
    assert main(["train", "real", "--clips", str(clips), "--labels",
                 str(tmp_path / "labels.csv"), "--own-data", "--final", "--out", str(run),
                 "--init-from", str(default_bundle_path()), "--steps", "3", "--batch", "4",
                 "--max-frames", "4", "--cache-dir", ""]) == 0
    meta = json.loads((run / "final" / "real_run.json").read_text())
    assert meta["config"]["init_from"] == str(default_bundle_path())
    assert meta["n_labelled"] == 4
    bundle = tmp_path / "mine"
    assert main(["export", str(run / "final"), "--out", str(bundle),
                 "--seg-from-bundle", str(default_bundle_path())]) == 0
    b = load_bundle(bundle)
    assert b.finding_names and b.has_segmentation()
    rc, rep = _score([clips / "clip0.gif"], bundle, tmp_path / "mine.json")
    assert rc == 0 and rep["clips"][0]["ok"]
    assert "own data" in (bundle / "MODEL_CARD.md").read_text()


def test_training_refuses_a_clip_whose_licence_forbids_it(tmp_path, capsys):
    from stream.cli import main

    (tmp_path / "a.gif").symlink_to(POCUS / "Reg-Atlas.gif")
    (tmp_path / "labels.csv").write_text("file,score,license\na.gif,0,CC BY-ND 4.0\n")
    rc = main(["train", "real", "--clips", str(tmp_path), "--labels",
               str(tmp_path / "labels.csv"), "--final", "--out", str(tmp_path / "r"),
               "--steps", "1", "--cache-dir", ""])
    assert rc == 2
    assert "a.gif: licence 'CC BY-ND 4.0' does not allow training" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_default_bundle_hides_its_simulator_masks_and_says_why():
    from stream.result_fields import mask_display_meta

    b = load_bundle(default_bundle_path())
    shown, note = b.masks_shown
    assert not shown and "simulated data" in note
    assert mask_display_meta(shown, note) == {"show": False, "note": note}
    assert mask_display_meta(True, "ignored") == {"show": True, "note": ""}
    shown, note = load_bundle(default_bundle_path().parent / "regstn-sim").masks_shown
    assert not shown and "simulated" in note  # simulator-only bundles hide theirs too (#29)
