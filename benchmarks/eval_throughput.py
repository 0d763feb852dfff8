"""Test log-likelihood by importance sampling, K draws per image: jlvm against PyTorch.

    python benchmarks/eval_throughput.py --impl {jlvm,torch} [--num-samples 5000]
        [--num-examples 10000] [--batch-size 100] [--chunk-size 500] [--run RUN_DIR]

log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x) from the encoder, for
every test image of binarized MNIST ($JLVM_DATA_DIR). Both implementations evaluate the SAME
parameters: a VAE of the protocol (benchmarks/_protocol.py) initialized with seed 0, or the
trained model of a ``jlvm train`` run directory (``--run``), so their log-likelihoods must
agree within Monte Carlo error. Prints one JSON line: seconds for the whole test set on a
second call (``first_call_s``: the first call, which includes jlvm's compilation), decoder
evaluations per second (examples x K / seconds), and the mean log-likelihood with its
standard error over images.

- jlvm: ``jlvm.evaluate.vae_log_likelihood`` (``lax.map`` over batches of images, ``vmap``
  within one, K draws ``chunk_size`` at a time with a running logsumexp).
- torch: the same computation written vectorized by hand: one [chunk, batch] block of draws
  through the decoder at a time, under ``torch.inference_mode``.

Float32 matrix products may use TF32 on GPUs in both (JAX's default; PyTorch is set to
"high" to match); ``--precision highest`` turns that off in both.
"""

from __future__ import annotations

import argparse
import math
import time

import _protocol as protocol
import numpy as np


def _params(args, data_dim: int):
    import jax

    from jlvm.models import vae

    if args.run is None:
        return vae.init(jax.random.PRNGKey(0), data_dim, protocol.LATENT,
                        hidden_dims=protocol.HIDDEN)
    from jlvm import runs
    from jlvm.runs import _setup

    run = runs.load(args.run)
    _, state = next(_setup.per_seed(run.config, run.state))  # the first seed
    return run.setup.built.params(state)


def _layers(state) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel [in, out], bias [out]) of each Linear layer of an NNX MLP's state, in order."""
    layers = state["net"]["layers"]
    return [(np.asarray(layers[i]["kernel"][...]), np.asarray(layers[i]["bias"][...]))
            for i in sorted(layers.keys())]


def run_jlvm(X: np.ndarray, params, args) -> tuple[float, float, np.ndarray, str]:
    import jax

    from jlvm import evaluate

    data = jax.device_put(X)
    key = jax.random.PRNGKey(1)

    def once():
        values = evaluate.vae_log_likelihood(key, params, data, args.num_samples,
                                             batch_size=args.batch_size,
                                             chunk_size=args.chunk_size)
        return jax.block_until_ready(values)

    start = time.perf_counter()
    once()  # compiles
    first = time.perf_counter() - start
    start = time.perf_counter()
    values = once()
    seconds = time.perf_counter() - start
    return seconds, first, np.asarray(values), protocol.jax_device()


def run_torch(X: np.ndarray, params, args) -> tuple[float, float, np.ndarray, str]:
    import torch
    import torch.nn.functional as F

    device, name = protocol.torch_device(args.torch_device)
    torch.manual_seed(1)
    if args.precision == "default":
        torch.set_float32_matmul_precision("high")  # TF32 where the GPU has it, as JAX does

    def to_torch(layers):
        return [(torch.tensor(w, device=device), torch.tensor(b, device=device))
                for w, b in layers]

    encoder, decoder = to_torch(_layers(params.encoder)), to_torch(_layers(params.decoder))

    def mlp(layers, h):
        for w, b in layers[:-1]:
            h = torch.tanh(torch.addmm(b, h, w))
        w, b = layers[-1]
        return torch.addmm(b, h, w)

    L = protocol.LATENT
    log_2pi = math.log(2 * math.pi)
    data = torch.from_numpy(X).to(device)

    @torch.inference_mode()
    def once():
        out = []
        for start in range(0, data.shape[0], args.batch_size):
            x = data[start:start + args.batch_size]  # [B, D]
            mean, log_std = mlp(encoder, x).chunk(2, dim=1)
            running = torch.full((x.shape[0],), -math.inf, device=device)
            for k0 in range(0, args.num_samples, args.chunk_size):
                k = min(args.chunk_size, args.num_samples - k0)
                eps = torch.randn(k, *mean.shape, device=device)  # [k, B, L]
                z = mean + log_std.exp() * eps
                logits = mlp(decoder, z.reshape(-1, L)).reshape(k, x.shape[0], -1)
                log_px_z = -F.binary_cross_entropy_with_logits(
                    logits, x.expand_as(logits), reduction="none").sum(-1)
                log_pz = -0.5 * (z**2).sum(-1) - 0.5 * L * log_2pi
                log_qz = (-0.5 * eps**2 - log_std).sum(-1) - 0.5 * L * log_2pi
                block = torch.logsumexp(log_px_z + log_pz - log_qz, dim=0)
                running = torch.logaddexp(running, block)
            out.append(running - math.log(args.num_samples))
        values = torch.cat(out)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return values

    start = time.perf_counter()
    once()  # warm-up: allocator, kernels
    first = time.perf_counter() - start
    start = time.perf_counter()
    values = once()
    seconds = time.perf_counter() - start
    return seconds, first, values.cpu().numpy(), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("jlvm", "torch"), required=True)
    parser.add_argument("--num-samples", type=int, default=5000, help="K (default 5000)")
    parser.add_argument("--num-examples", type=int, default=None,
                        help="the first N test images (default all)")
    parser.add_argument("--batch-size", type=int, default=100, help="images at once")
    parser.add_argument("--chunk-size", type=int, default=500, help="draws per image at once")
    parser.add_argument("--run", help="a jlvm train run directory whose model to evaluate")
    parser.add_argument("--precision", choices=("default", "highest"), default="default")
    parser.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto")
    protocol.add_data_arguments(parser)
    args = parser.parse_args()
    protocol.check_positive(parser, args,
                            ("num_samples", "num_examples", "batch_size", "chunk_size"))
    if args.precision == "highest":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    _, test = protocol.load(args.data)
    X = test[: args.num_examples]
    params = _params(args, X.shape[1])
    runner = run_jlvm if args.impl == "jlvm" else run_torch
    seconds, first_seconds, values, device = runner(X, params, args)
    evaluations = X.shape[0] * args.num_samples
    protocol.report(
        impl=args.impl, seconds=round(seconds, 4), device=device,
        decoder_evals_per_s=round(evaluations / seconds),
        num_examples=int(X.shape[0]), num_samples=args.num_samples,
        batch_size=args.batch_size, chunk_size=args.chunk_size, precision=args.precision,
        log_likelihood=round(float(values.mean()), 4),
        log_likelihood_se=round(float(values.std(ddof=1) / math.sqrt(len(values))), 4),
        first_call_s=round(first_seconds, 3), model=args.run or "initialized, seed 0")


if __name__ == "__main__":
    main()
