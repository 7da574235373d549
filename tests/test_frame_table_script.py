"""scripts/frame_table.py and train.frame.report: Table I rows from `pleura eval frame --json`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from train.frame.report import details_markdown, table_markdown

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "frame_table.py"


@pytest.fixture(scope="module")
def ft():
    spec = importlib.util.spec_from_file_location("frame_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _doc(micro: float) -> dict:
    table = {c: {"micro_f1": micro, "weighted_f1": micro / 2, "n": 10} for c in
             ("S1", "K=1", "K=3", "K=5", "K=7", "video-ann.", "A=3", "A=4")}
    table["avg"] = {"micro_f1": micro, "weighted_f1": micro / 2}
    s1 = {"n": 10, "weighted_f1": micro / 2, "qwk": 0.5, "within_one": 0.9,
          "per_class_f1": [1.0, 0.5, 0.25, 0.0]}
    return {"table": table, "setting1": s1, "stride": 2,
            "localisation": {"sigma1_mean": 0.5, "sigma2_mean": 0.75,
                             "stn_crop1": {"pointing": 0.8}, "gradcam": {"pointing": 0.9}}}


def test_rows_from_json(ft, tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_doc(0.6)))
    label, doc = ft.load(f"Reg-STN=A=B={p}")  # the label may contain '='
    assert label == "Reg-STN=A=B"
    rows = table_markdown({label: doc["table"]}).splitlines()
    assert rows[2] == "| Reg-STN=A=B | " + " | ".join(["60.0"] * 9) + " |"
    assert table_markdown({label: doc["table"]}, "weighted_f1").splitlines()[2].count("30.0") == 9
    detail = details_markdown({label: doc}).splitlines()[2]
    assert "10 (2)" in detail and "100 / 50 / 25 / 0" in detail and "80.0 vs 90.0" in detail


def test_bad_inputs(ft, tmp_path):
    with pytest.raises(ValueError, match="LABEL=FILE"):
        ft.load("no-label.json")
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="not a `pleura eval frame"):
        ft.load(f"x={p}")
