"""Training throughput of a frame model on this machine (frames/s, wall clock).

Usage:
    python scripts/train_throughput.py reg-stn --threads 1 --batch 16 [--steps 3] [--channels-last]
        [--freeze-cnn]

One forward + backward + Adam step per batch of random 224 x 224 input (the cost does not
depend on the data), one warm-up step, then ``--steps`` timed steps. ``--freeze-cnn`` trains
only the localisation net and θ heads (the CPU recipe's ``loc`` stage: Φ_cnn fixed, in eval
mode). The loss is the mean of the logits: only the compute matters here, not what is learnt.
The numbers in
docs/results/frame.md ("Training throughput") were measured this way.
"""

from __future__ import annotations

import argparse
import time

import torch

from train.frame.models.registry import MODELS, build_model


def frames_per_second(name: str, threads: int, batch: int, steps: int = 3,
                      channels_last: bool = False, freeze_cnn: bool = False) -> float:
    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(name).to(memory_format=fmt)
    if freeze_cnn:
        model.cnn.eval()
        model.cnn.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=fmt)

    def step() -> None:
        loss = model(x)["logits"].float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--freeze-cnn", action="store_true", help="train the θ branch only")
    a = ap.parse_args()
    fps = frames_per_second(a.model, a.threads, a.batch, a.steps, a.channels_last,
                            a.freeze_cnn)
    frozen = " frozen Φ_cnn" if a.freeze_cnn else ""
    print(f"{a.model}{frozen} threads {a.threads} batch {a.batch}: {fps:.2f} frames/s")


if __name__ == "__main__":
    main()
