"""End to end on a tiny simulated set: train a U-Net for 2 steps, reload it, evaluate it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from train.seg.config import ARCH_NAMES, TrainConfig
from train.seg.eval_cli import add_arguments as eval_args
from train.seg.eval_cli import run as eval_run
from train.seg.models import ModelConfig, build_model
from train.seg.run import load_run
from train.seg.train import train, warm_start
from train.synth.writer import SynthConfig, write_dataset


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "sim"
    write_dataset(root, SynthConfig(patients=3, videos_per_patient=1, frames=4, size=96, seed=5),
                  progress=False)
    return root


def test_train_reload_evaluate(sim, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(sim), out=str(out), epochs=2, steps_per_epoch=2, batch_size=2,
                      val_frames=4, max_frames=8, threads=1, val_fraction=0.34)
    best = train(cfg, progress=False)
    assert {"config.json", "best.pt", "metrics.csv"} <= {p.name for p in out.iterdir()}
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "seg" and config["best"]["epoch"] == best["epoch"]
    assert set(config["split"]["train"]).isdisjoint(config["split"]["val"])

    model, config = load_run(out)
    assert not model.training
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 200, 260))
    assert y.shape == (1, 5, 200, 260)

    p = argparse.ArgumentParser()
    eval_args(p)
    js = tmp_path / "eval.json"
    args = p.parse_args(["--runs", str(out), "--data", str(sim), "--mc", "3", "--mc-frames",
                         "2", "--max-frames", "6", "--json", str(js), "--threads", "1"])
    assert eval_run(args) == 0
    res = json.loads(js.read_text())
    assert res["n_frames"] == 6 and [r["name"] for r in res["table"]] == ["U-Net + aug",
                                                                          "Ensemble"]
    member, ens = res["table"]
    assert 0.0 <= member["acc"] <= 1.0 and member["acc"] == ens["acc"]  # one-member ensemble
    u = res["uncertainty"][0]
    assert u["passes"] == 3 and np.isfinite(u["inside"]) and u["inside"] >= 0
    assert "Table IV" in capsys.readouterr().out

    # --init-from: the weights come over exactly; another model config is refused
    mcfg = ModelConfig(**config["model"])
    fresh = build_model(mcfg)
    warm_start(fresh, mcfg, out)
    saved = torch.load(out / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(ValueError, match="differs"):
        warm_start(build_model(ModelConfig(arch="unet", norm=False)),
                   ModelConfig(arch="unet", norm=False), out)
    with pytest.raises(FileNotFoundError, match="init-from"):
        warm_start(fresh, mcfg, tmp_path)


def test_config_validates_arch_and_batch():
    with pytest.raises(ValueError, match="unet, unetpp, deeplabv3p"):
        TrainConfig(data="x", arch="unet3d")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(data="x", batch_size=1)
    from train.seg.models import ARCHITECTURES
    assert tuple(ARCHITECTURES) == ARCH_NAMES


def test_load_run_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="pleura train seg"):
        load_run(tmp_path)
