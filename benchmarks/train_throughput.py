"""Training throughput of the same VAE in jlvm, NumPyro, Pyro, PyTorch and hand-written JAX.

    python benchmarks/train_throughput.py --impl {jlvm,jax,numpyro,pyro,torch,
        jlvm-incomplete,jlvm-incomplete-mask} [...] [--steps 500] [--repeats 3]
        [--num-seeds S] [--devices N] [--missing-rate 0.25] [--data binarized-mnist]

Prints one JSON line per implementation: {"impl", "examples_per_s", "device", ...}; given
several, it times them in turn, repeat by repeat, and adds a line of throughput ratios
(the first against each other one): the ratio of the medians, and the median of the
per-repeat ratios (``paired_ratios``, which cancels drift in the machine's speed). The protocol
(benchmarks/_protocol.py): encoder 784-200-200-(50, 50), decoder 50-200-200-784, tanh,
Bernoulli, N(0, I) prior, Adam 1e-3, batch 100, one-sample ELBO, binarized MNIST from
$JLVM_DATA_DIR. Each repeat times ``--steps`` training steps (500 = one epoch of the 50,000
training images) after a warm-up that compiles everything; the figure is the median repeat.
Each timed epoch includes its own shuffle, in every implementation.

- jlvm: ``inference.amortized`` + ``train.make_epoch`` (a ``lax.scan`` over the epoch);
  ``--num-seeds S`` trains S independent VAEs at once (examples_per_s is the aggregate);
  ``--devices N`` shards each batch over N devices (``jax.sharding.Mesh``).
- jax: the same model hand-written in plain JAX + optax, its epoch one jitted ``lax.scan``:
  the reference for what jlvm's layers cost.
- numpyro: NumPyro's idiom: ``flax_module`` (Flax linen) + ``SVI`` + ``Trace_ELBO``, with
  ``svi.update`` under ``jax.jit`` called once per step from Python.
- pyro: Pyro's idiom: ``pyro.module`` + ``SVI`` + ``Trace_ELBO``, ``svi.step`` per batch.
- torch: a plain PyTorch loop (``nn.Module``s, ``torch.optim.Adam``), no compilation.
- jlvm-incomplete: jlvm's step on incomplete batches ``(x, mask)``, each pixel missing with
  probability ``--missing-rate`` (the likelihood counts observed pixels only; the encoder
  sees x with its holes at 0); jlvm-incomplete-mask: the same with the encoder seeing the
  mask beside x (``encoder_sees_mask=True``: its first layer takes 2 x 784 inputs; ``jlvm
  train --missing`` runs do as jlvm-incomplete does, and runs written before 2026-12-03 as
  this one).

The peers are optional: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable

import _protocol as protocol
import numpy as np

IMPLS = ("jlvm", "jax", "numpyro", "pyro", "torch", "jlvm-incomplete", "jlvm-incomplete-mask")
# (run one timed epoch and wait for it, the device's name, the figures to report after)
Runner = tuple[Callable[[], None], str, Callable[[], dict]]


# ------------------------------------------------------------------------ jlvm


def run_jlvm(X: np.ndarray, args) -> Runner:

    import jax
    import optax

    from jlvm import train
    from jlvm.inference import amortized
    from jlvm.models import vae

    incomplete = args.impl_name.startswith("jlvm-incomplete")
    conv = args.architecture == "conv"
    side = math.isqrt(X.shape[1])  # square images
    learner = amortized(vae.model(X.shape[1], protocol.LATENT,
                                  hidden_dims=(32, 64) if conv else protocol.HIDDEN,
                                  architecture=args.architecture,
                                  image_shape=(side, side) if conv else None,
                                  encoder_sees_mask=args.impl_name == "jlvm-incomplete-mask"),
                        optax.adam(protocol.LEARNING_RATE))
    mesh = train.data_mesh(args.devices) if args.devices else None
    seeds = args.num_seeds
    epoch = train.make_epoch(learner, protocol.BATCH, chunk_steps=args.steps, mesh=mesh,
                             num_seeds=seeds)
    data = jax.device_put(X)
    if incomplete:  # the same images, each pixel missing with probability --missing-rate
        mask = np.random.default_rng(0).random(X.shape) >= args.missing_rate
        data = (jax.device_put(np.where(mask, X, 0.0).astype(X.dtype)), jax.device_put(mask))
    first = jax.tree_util.tree_map(lambda a: a[:protocol.BATCH], data)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds or 1)
    if seeds:
        state = jax.vmap(learner.init, in_axes=(0, None))(keys, first)
    else:
        state = learner.init(keys[0], first)
    box = {"state": state}

    def run():
        box["state"], box["metrics"] = epoch(box["state"], data)
        jax.block_until_ready(box["state"])

    run()  # compiles

    return run, protocol.jax_device(), lambda: {
        "final_elbo": float(np.mean(np.asarray(box["metrics"]["elbo"])[-20:])),
        "num_seeds": seeds or 1, "devices": args.devices or 1,
        "architecture": args.architecture,
        **({"missing_rate": args.missing_rate} if incomplete else {})}


# --------------------------------------------------------- hand-written JAX


ELBO_FORMS = ("joint", "kl")


def jax_model(D: int, elbo_form: str = "joint"):
    """(init(key) -> params, loss(params, key, x [B, D]) -> minus the batch-mean ELBO): the
    protocol's VAE as plain arrays, with the one-draw ELBO in its joint form, log p(x|z) +
    log p(z) - log q(z|x), or (``elbo_form="kl"``) its KL form, log p(x|z) - KL(q || p)."""
    if elbo_form not in ELBO_FORMS:
        raise ValueError(f"elbo_form must be one of {ELBO_FORMS}, got {elbo_form!r}")
    import jax
    import jax.numpy as jnp

    L = protocol.LATENT

    def dense(key, n_in, n_out):  # Flax's default init: lecun normal weights, zero bias
        return {"w": jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in),
                "b": jnp.zeros(n_out)}

    def mlp_init(key, sizes):
        keys = jax.random.split(key, len(sizes) - 1)
        return [dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"encoder": mlp_init(k1, [D, *protocol.HIDDEN, 2 * L]),
                "decoder": mlp_init(k2, [L, *protocol.HIDDEN, D])}

    def mlp(layers, h):
        for layer in layers[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        return h @ layers[-1]["w"] + layers[-1]["b"]

    def loss(params, key, x):
        out = mlp(params["encoder"], x)
        mean, log_std = out[:, :L], out[:, L:]
        eps = jax.random.normal(key, mean.shape)
        z = mean + jnp.exp(log_std) * eps
        logits = mlp(params["decoder"], z)
        log_px_z = jnp.sum(x * logits - jnp.logaddexp(0.0, logits), axis=1)
        if elbo_form == "kl":  # KL(N(mean, std^2) || N(0, I)), analytic
            kl = 0.5 * jnp.sum(mean**2 + jnp.exp(2 * log_std) - 1 - 2 * log_std, axis=1)
            return -jnp.mean(log_px_z - kl)
        log_pz = -0.5 * jnp.sum(z**2, axis=1)
        log_qz = jnp.sum(-0.5 * eps**2 - log_std, axis=1)  # the 2 pi terms cancel
        return -jnp.mean(log_px_z + log_pz - log_qz)

    return init, loss


def jax_epoch(loss, optimizer):
    """The hand-written epoch: ``epoch((params, opt_state, key), data [N, D])`` -> (carry,
    per-step ELBOs), one jitted ``lax.scan`` of Adam steps over a fresh shuffle of ``data``
    in batches of ``protocol.BATCH`` (a last partial batch is dropped)."""
    import jax
    import optax

    def step(carry, x):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, sub, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), -value

    @jax.jit
    def epoch(carry, data):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        usable = data.shape[0] - data.shape[0] % protocol.BATCH
        batches = jax.random.permutation(sub, data)[:usable].reshape(-1, protocol.BATCH,
                                                                      data.shape[1])
        return jax.lax.scan(step, (params, opt_state, key), batches)

    return epoch


def run_jax(X: np.ndarray, args) -> Runner:
    import jax
    import optax

    D = X.shape[1]
    init, loss = jax_model(D)
    optimizer = optax.adam(protocol.LEARNING_RATE)
    epoch = jax_epoch(loss, optimizer)

    k1, k3 = jax.random.split(jax.random.PRNGKey(0))
    params = init(k1)
    data = jax.device_put(X)
    box = {"carry": (params, optimizer.init(params), k3)}

    def run():
        box["carry"], box["elbos"] = epoch(box["carry"], data)
        jax.block_until_ready(box["carry"])

    run()  # compiles

    return run, protocol.jax_device(), lambda: {
        "final_elbo": float(np.mean(np.asarray(box["elbos"])[-20:]))}


# --------------------------------------------------------------------- NumPyro


def run_numpyro(X: np.ndarray, args) -> Runner:
    import flax.linen as linen
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.module import flax_module
    from numpyro.infer import SVI, Trace_ELBO

    D, L = X.shape[1], protocol.LATENT

    class Encoder(linen.Module):
        @linen.compact
        def __call__(self, x):
            for width in protocol.HIDDEN[::-1]:
                x = jnp.tanh(linen.Dense(width)(x))
            out = linen.Dense(2 * L)(x)
            return out[..., :L], jnp.exp(out[..., L:])

    class Decoder(linen.Module):
        @linen.compact
        def __call__(self, z):
            for width in protocol.HIDDEN:
                z = jnp.tanh(linen.Dense(width)(z))
            return linen.Dense(D)(z)

    def model(x):
        decoder = flax_module("decoder", Decoder(), input_shape=(1, L))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([L]).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        encoder = flax_module("encoder", Encoder(), input_shape=(1, D))
        with numpyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # Trace_ELBO's loss is the batch SUM of -ELBO; Adam is invariant to that scale up to eps
    svi = SVI(model, guide, numpyro.optim.Adam(protocol.LEARNING_RATE), Trace_ELBO())
    data = jax.device_put(X)
    key = jax.random.PRNGKey(0)
    svi_state = svi.init(key, data[:protocol.BATCH])
    update = jax.jit(svi.update)
    steps = X.shape[0] // protocol.BATCH

    box = {"state": svi_state, "key": jax.random.PRNGKey(1)}

    def run():
        box["key"], key = jax.random.split(box["key"])
        batches = jax.random.permutation(key, data).reshape(steps, protocol.BATCH, D)
        svi_state = box["state"]
        for i in range(steps):
            svi_state, loss = update(svi_state, batches[i])
        box["state"], box["loss"] = jax.block_until_ready((svi_state, loss))

    run()  # compiles

    return run, protocol.jax_device(), lambda: {
        "final_elbo": -float(box["loss"]) / protocol.BATCH}


# ------------------------------------------------------------- torch and Pyro


def _torch_networks(D: int, L: int, device):
    from torch import nn

    def mlp(sizes):
        layers = []
        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1])).to(device)

    return (mlp([D, *protocol.HIDDEN[::-1], 2 * L]), mlp([L, *protocol.HIDDEN, D]))


def _torch_batches(data, device):
    """One shuffled epoch of data [N, D] as [BATCH, D] tensors (the last N mod BATCH dropped)."""
    import torch

    order = torch.randperm(data.shape[0], device=device)
    for i in range(data.shape[0] // protocol.BATCH):
        yield data[order[i * protocol.BATCH:(i + 1) * protocol.BATCH]]


def _torch_runner(epoch, device):
    """epoch() made to wait for the GPU, after one untimed warm-up epoch."""
    import torch

    def run():
        epoch()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up: allocator, kernels
    return run


def run_torch(X: np.ndarray, args) -> Runner:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    device, name = protocol.torch_device(args.torch_device)
    D, L = X.shape[1], protocol.LATENT
    encoder, decoder = _torch_networks(D, L, device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()],
                                 lr=protocol.LEARNING_RATE)
    data = torch.from_numpy(X).to(device)
    box = {}

    def epoch():
        for x in _torch_batches(data, device):
            mean, log_std = encoder(x).chunk(2, dim=1)
            eps = torch.randn_like(mean)
            z = mean + log_std.exp() * eps
            logits = decoder(z)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            log_pz = -0.5 * (z**2).sum(1)
            log_qz = (-0.5 * eps**2 - log_std).sum(1)  # the 2 pi terms cancel
            loss = -(log_px_z + log_pz - log_qz).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        box["loss"] = loss.detach()

    return _torch_runner(epoch, device), name, lambda: {"final_elbo": -float(box["loss"])}


def run_pyro(X: np.ndarray, args) -> Runner:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    device, name = protocol.torch_device(args.torch_device)
    D, L = X.shape[1], protocol.LATENT
    encoder, decoder = _torch_networks(D, L, device)
    zeros, ones = torch.zeros(L, device=device), torch.ones(L, device=device)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, ones).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z), validate_args=False).to_event(1),
                        obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            mean, log_std = encoder(x).chunk(2, dim=1)
            pyro.sample("z", dist.Normal(mean, log_std.exp()).to_event(1))

    # Trace_ELBO's loss is the batch SUM of -ELBO; Adam is invariant to that scale up to eps
    svi = SVI(model, guide, pyro.optim.Adam({"lr": protocol.LEARNING_RATE}), Trace_ELBO())
    data = torch.from_numpy(X).to(device)
    box = {}

    def epoch():
        for x in _torch_batches(data, device):
            box["loss"] = svi.step(x)

    return _torch_runner(epoch, device), name, lambda: {
        "final_elbo": -float(box["loss"]) / protocol.BATCH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=IMPLS, nargs="+", required=True,
                        help="one or more; several are timed in turn, repeat by repeat, so "
                        "their ratios come from the same moments of the same machine")
    parser.add_argument("--steps", type=int, default=protocol.STEPS_PER_EPOCH,
                        help="timed steps per repeat (default 500: one epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; median reported")
    parser.add_argument("--num-seeds", type=int, default=None,
                        help="jlvm: train this many independent VAEs at once")
    parser.add_argument("--devices", type=int, default=None,
                        help="jlvm: shard each batch over this many devices")
    parser.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--missing-rate", type=float, default=0.25,
                        help="jlvm-incomplete*: the chance that a pixel is missing (default "
                        "0.25)")
    parser.add_argument("--architecture", choices=("mlp", "conv"), default="mlp",
                        help="jlvm: the protocol's MLPs, or convolutional networks (channels "
                        "32, 64, as binarized_mnist_table.py's conv row)")
    protocol.add_data_arguments(parser)
    args = parser.parse_args()
    if args.architecture == "conv" and any(not impl.startswith("jlvm") for impl in args.impl):
        parser.error("--architecture conv applies to the jlvm implementations alone")
    if not 0 <= args.missing_rate < 1:
        parser.error(f"--missing-rate must be in [0, 1), got {args.missing_rate}")
    protocol.check_positive(parser, args, ("steps", "repeats", "num_seeds", "devices"))
    if (args.num_seeds or args.devices) and any(not impl.startswith("jlvm")
                                                for impl in args.impl):
        parser.error("--num-seeds and --devices apply to the jlvm implementations alone")
    train_rows, _ = protocol.load(args.data)
    X = protocol.rows_for_steps(train_rows, args.steps)
    runners = {}
    for impl in dict.fromkeys(args.impl):
        args.impl_name = impl
        runners[impl] = globals()[f"run_{impl.split('-')[0]}"](X, args)
    times = {impl: [] for impl in runners}
    for _ in range(args.repeats):
        for impl, (run, _, _) in runners.items():
            start = time.perf_counter()
            run()
            times[impl].append(time.perf_counter() - start)
    throughput = {}
    for impl, (_, device, extra) in runners.items():
        seconds = statistics.median(times[impl])
        figures = extra()
        examples = args.steps * protocol.BATCH * figures.get("num_seeds", 1)
        throughput[impl] = examples / seconds
        protocol.report(impl=impl, examples_per_s=round(throughput[impl]), device=device,
                        steps=args.steps, data=args.data,
                        ms_per_step=round(seconds / args.steps * 1e3, 4),
                        repeats_s=[round(t, 6) for t in times[impl]], **figures)
    if len(runners) > 1:
        first = next(iter(throughput))
        others = [impl for impl in throughput if impl != first]
        # Each repeat's ratio pairs two epochs timed a second apart, so drift in the machine's
        # speed cancels from it: a second estimate beside the ratio of the medians.
        paired = {impl: statistics.median(
            b / a for a, b in zip(times[first], times[impl], strict=True)) for impl in others}
        protocol.report(ratios={f"{first}/{impl}": round(throughput[first] / throughput[impl], 3)
                                for impl in others},
                        paired_ratios={f"{first}/{impl}": round(paired[impl], 3)
                                       for impl in others},
                        interleaved_repeats=args.repeats)


if __name__ == "__main__":
    main()
