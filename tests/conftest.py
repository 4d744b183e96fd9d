"""Shared test helpers: where the public datasets are, and what happens when they are missing.

Tests that need a dataset ask for it through `dataset_dir`. Locally a missing set skips with a clear reason;
under CI=true it fails, so CI can never go green by silently skipping the data tests.
"""

import os
from pathlib import Path

import numpy as np
import pytest


def _require(path: Path, what: str) -> Path:
    if path.is_dir() and any(path.iterdir()):
        return path
    message = f"{what} not found at {path} (set BDN_DATA to the folder holding CC, PolyU, Set12, BSD68, Train400)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def dataset_dir():
    """Return a function name -> folder of that dataset under BDN_DATA, skipping (or failing in CI) if absent."""
    from bdn.data import data_root

    def get(name: str) -> Path:
        return _require(data_root() / name, f"dataset {name}")

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's torch work on one thread.

    Tiny tensors gain nothing from a second thread, and on cores shared with other jobs OpenMP's waiting threads
    made the same DIP test 15-20x slower (73 s against 3.9 s, measured here).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_norms(net, low: float = 0.5):
    """`net` in eval mode with trained-looking norms and biases (fresh ones are the identity, which would hide
    folding mistakes): norm scales from [low, 1.5], variances from [0.2, 3], biased norms' means and shifts and every
    conv bias small; a conv that starts at zero (a resnet's head) gets small weights. Seeded: the same every call."""
    import torch
    from torch import nn

    from bdn.models.layers import BiasFreeBatchNorm2d

    generator = torch.Generator().manual_seed(0)

    def uniform(tensor, a, b):
        tensor.copy_(a + (b - a) * torch.rand(tensor.shape, generator=generator))

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, BiasFreeBatchNorm2d | nn.BatchNorm2d):
                uniform(module.weight, low, 1.5)
                uniform(module.running_var, 0.2, 3.0)
            if isinstance(module, nn.BatchNorm2d):
                uniform(module.running_mean, -0.3, 0.3)
                uniform(module.bias, -0.2, 0.2)
            if isinstance(module, nn.Conv2d):
                if not module.weight.any():
                    uniform(module.weight, -0.1, 0.1)
                if module.bias is not None:
                    uniform(module.bias, -0.1, 0.1)
    return net.eval()


@pytest.fixture
def randomise_norms():
    """The function _randomise_norms (a fixture, so test modules share it without importing conftest)."""
    return _randomise_norms


@pytest.fixture
def interrupt_on_call(monkeypatch):
    """interrupt_on_call(module, name, n): the n-th call of module.name raises KeyboardInterrupt (Ctrl+C there);
    the function returned puts the real one back."""

    def patch(module, name: str, n: int):
        real, calls = getattr(module, name), []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, interrupted)
        return lambda: monkeypatch.setattr(module, name, real)

    return patch


def tiny_train_config(model: str, folder, **train) -> dict:
    """The smallest `bdn train` pipeline config: a grey `model` on 24-pixel patches of the images in `folder`,
    validated at sigma 25 on 48-pixel crops; `train` keys override the one epoch on one thread."""
    return {
        "model": {"name": model, "channels": 1},
        "data": {
            "dataset": str(folder),
            "patch": 24,
            "patches_per_epoch": 16,
            "batch_size": 8,
            "val_fraction": 0.3,
            "val_sigmas": [25],
            "val_crop": 48,
        },
        "train": {"epochs": 1, "threads": 1, **train},
    }
