"""scripts/train_throughput.py runs a real training step and reports a positive rate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_throughput.py"


def test_cnn_sord_step_rate():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fps = mod.frames_per_second("cnn-sord", threads=1, batch=2, steps=1, channels_last=True)
    assert fps > 0
