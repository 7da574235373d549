"""``pleura eval score --run RUN PATH...``: score clips with a PyTorch frame run.

``pleura score`` with a training run instead of an exported bundle, for development before a
bundle exists and for checking an export (``docs/performance/engines.md``: bundle vs run on the
same frames). The run's model goes behind the runtime's engine interface
(:class:`train.video.features.TorchFrameEngine`) and the clips go through the same scoring
core and clip loop as ``pleura score`` (:mod:`engines.scorer`, :mod:`stream.score_clips`), so
only the engine differs; output, exit codes and the JSON schema are ``pleura score``'s
(``docs/score-json.md``, ``model.backend`` is ``torch``). The run's preprocessing is the
standard frame spec (:data:`engines.preprocess.FRAME_SPEC`) and its video score uses
``e = 0.5`` unless ``--uninorm`` gives learned neutral elements.

Lives in ``train/`` because it imports torch; the runtime never does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.score import add_common_arguments, output_problem, run_scorer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="frame run folder from `pleura train frame`")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from engines.preprocess import FRAME_SPEC
    from engines.scorer import DEFAULT_E, Scorer
    from train.video.features import engine_from_run  # imports torch

    problem = output_problem(args)
    if problem:
        print(f"pleura eval score: {problem}", file=sys.stderr)
        return 2
    try:
        engine = engine_from_run(args.run, device=args.device)
    except (OSError, ValueError, KeyError) as exc:
        print(f"pleura eval score: cannot load the frame run {args.run} ({exc}); give a folder "
              "written by `pleura train frame --out RUN`")
        return 2
    scorer = Scorer(engine, FRAME_SPEC, np.asarray(DEFAULT_E, dtype=np.float64),
                    Path(args.run).name, "torch")
    return run_scorer(args, scorer)
