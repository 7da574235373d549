"""A tiny simulated dataset shared by the frame tests (3 patients x 1 video x 8 frames, 64 px)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory) -> Path:
    from train.synth.writer import SynthConfig, write_dataset

    root = tmp_path_factory.mktemp("frame-sim") / "data"
    write_dataset(root, SynthConfig(patients=3, videos_per_patient=1, frames=8, size=64,
                                    seed=3, transition_p=1.0), progress=False)
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per frame test (restored after): on the shared 2-core machine two
    OpenMP threads are slower than one; the setting does not leak into other tests."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
