"""Frame training: one epoch lowers the loss, resume gives the same state, CLI wiring."""

import csv
import json
from pathlib import Path

import pytest
import torch

from tests._frame_fixtures import one_torch_thread, tiny_sim  # noqa: F401 - fixtures
from train.data.layout import read_dataset
from train.frame.config import TrainConfig
from train.frame.data import FrameDataset, build_table
from train.frame.models import build_model
from train.frame.run import load_run
from train.frame.trainer import seed_everything, train
from train.losses import sord_loss


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), model="cnn-sord", epochs=1, batch=8, lr=1e-3,
                frames_per_epoch=32, seed=0, device="cpu", cache_dir=None)
    base.update(kw)
    return TrainConfig(**base)


def _loss_on(model, x, y):
    # train-mode BN (batch statistics) with a fixed dropout seed: a fair before/after comparison
    model.train()
    torch.manual_seed(123)
    with torch.no_grad():
        return float(sord_loss(model(x)["logits"], y))


def test_one_epoch_lowers_the_loss(tiny_sim, tmp_path):  # noqa: F811
    # 8 steps of 8 frames: with seeds 0-3 the loss drops by 0.24-0.65 (4 steps dropped it by
    # only 0.048 for seed 0, under the 0.05 margin: issue #15); seeded, so never flaky
    cfg = _cfg(tiny_sim, tmp_path / "run", frames_per_epoch=64)
    ds = read_dataset(tiny_sim)
    table = build_table(ds, None, progress=False)
    seed_everything(cfg.seed)
    before_model = build_model(cfg.model)  # the trainer's initialisation (same seed)
    out = train(cfg, table=table, progress=False)
    rows = table.select(json.loads((out / "split.json").read_text())["train"])
    data = FrameDataset(table, rows)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    after_model, cfg2 = load_run(out, which="last")
    assert cfg2 == cfg
    before, after = _loss_on(before_model, x, y), _loss_on(after_model, x, y)
    assert after < before - 0.05, (before, after)
    with (out / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    assert len(metrics) == 1 and float(metrics[0]["frames"]) == 64
    assert (out / "best.pt").exists() and (out / "config.json").exists()


def test_resume_gives_the_same_state(tiny_sim, tmp_path):  # noqa: F811
    table = build_table(read_dataset(tiny_sim), None, progress=False)
    kw = dict(model="cnn-randcrop-sord", epochs=2, frames_per_epoch=16)
    straight = train(_cfg(tiny_sim, tmp_path / "a", **kw), table=table, progress=False)
    cfg_b = _cfg(tiny_sim, tmp_path / "b", **kw)
    train(cfg_b, table=table, progress=False, stop_after=1)
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 2  # 1 epoch
    resumed = train(cfg_b, resume=True, table=table, progress=False)
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-6, rtol=1e-5)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert a["scheduler"] == b["scheduler"]


def test_existing_run_needs_resume(tiny_sim, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(_cfg(tiny_sim, out).to_json())
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(tiny_sim, out), table=None, progress=False)


def test_cli_dispatch_train_frame_help(capsys):
    from stream.cli import build_parser

    argv = ["train", "frame", "--data", "D", "--out", "R", "--model", "cnn-ce"]
    args = build_parser(argv).parse_args(argv)
    assert args._sub_module == "train.frame.train_cli" and args.model == "cnn-ce"
    argv = ["eval", "frame", "--run", "R", "--data", "D", "--json", "o.json"]
    args = build_parser(argv).parse_args(argv)
    assert args._sub_module == "train.frame.eval_cli" and args.split == "test"


def test_cli_wrong_model_lists_options(tmp_path):
    from stream.cli import main

    with pytest.raises(KeyError, match="reg-stn"):
        main(["train", "frame", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
              "--model", "nope"])


def test_cli_zero_gap_reaches_the_training_config(tmp_path, monkeypatch):
    """``--zero-gap`` (SORD with score 0 at −0.5) is a TrainConfig field, off by default (the
    paper's frame stage). The trainer is replaced by a recorder: this checks the CLI wiring."""
    import train.frame.trainer as trainer_mod
    from stream.cli import main

    seen = []
    monkeypatch.setattr(trainer_mod, "train",
                        lambda cfg, resume=False: seen.append(cfg) or Path(cfg.out))
    base = ["train", "frame", "--data", str(tmp_path), "--model", "cnn-sord"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--zero-gap"]) == 0
    assert [c.zero_gap for c in seen] == [False, True]
