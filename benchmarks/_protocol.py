"""The benchmark protocol shared by every script in this folder (issue 5), in one place.

VAE: encoder 784-200-200-(50 mean, 50 log-std), decoder 50-200-200-784, tanh, Bernoulli
likelihood, N(0, I) prior, Adam 1e-3, batch 100, statically binarized MNIST read from
$JLVM_DATA_DIR. The training objective is the single-sample ELBO in its joint form,
log p(x|z) + log p(z) - log q(z|x) with z ~ q(z|x) reparameterized, in every implementation
(it is what NumPyro's and Pyro's Trace_ELBO compute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np

LATENT = 50
HIDDEN = (200, 200)
BATCH = 100
LEARNING_RATE = 1e-3
STEPS_PER_EPOCH = 500  # 50,000 training images / 100


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("binarized-mnist", "digits"), default="binarized-mnist",
                        help="binarized-mnist (from $JLVM_DATA_DIR; the protocol) or digits "
                        "(bundled 8x8, for a quick look only)")


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   names: tuple[str, ...]) -> None:
    """parser.error for any of these options given below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def load(name: str):
    """(train [N, D], test [M, D]) float32 arrays of 0/1 pixels."""
    from jlvm import data

    dataset = data.load(name)
    return np.asarray(dataset.train, np.float32), np.asarray(dataset.test, np.float32)


def rows_for_steps(X: np.ndarray, steps: int) -> np.ndarray:
    """The first steps x BATCH rows of X, repeated cyclically where X has fewer."""
    return X[np.arange(steps * BATCH) % X.shape[0]]


def _cpu() -> str:
    return f"cpu ({os.cpu_count()} cores, {platform.machine()})"


def jax_device() -> str:
    """The device JAX computes on, named as ``torch_device`` names it, so lines compare."""
    import jax

    device = jax.devices()[0]
    name = _cpu() if device.platform == "cpu" else f"{device.platform}: {device.device_kind}"
    return name + (f" x{jax.device_count()}" if jax.device_count() > 1 else "")


def torch_device(requested: str):
    """(torch.device, its name): CUDA where available unless ``requested`` is "cpu"."""
    import torch

    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), _cpu()
    device = torch.device("cuda")
    return device, f"gpu: {torch.cuda.get_device_name(device)}"


def report(**fields) -> None:
    """One JSON line on stdout, plus the versions that produced it."""
    print(json.dumps(fields), flush=True)
