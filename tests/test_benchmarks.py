"""The benchmark scripts run, print the JSON they promise, and agree with each other.

Tiny sizes on the bundled digits; the peers (NumPyro, Pyro, PyTorch: ``pip install -e
'.[bench]'``) are exercised only where installed. No timing is asserted anywhere."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script, *arguments):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--data", "digits",
                           *arguments], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("impl", ["jlvm", "jax", "numpyro", "pyro", "torch"])
def test_train_throughput_prints_one_json_line(impl):
    peer = {"numpyro": "numpyro", "pyro": "pyro", "torch": "torch"}.get(impl)
    if peer and importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed (pip install -e '.[bench]')")
    line = _run("train_throughput.py", "--impl", impl, "--steps", "20", "--repeats", "1")
    assert line["impl"] == impl and line["examples_per_s"] > 0 and line["device"]
    # 40 steps from a fresh start on 64-pixel digits: every implementation's ELBO lies
    # between -80 and -15 nats per image; a wrong sign or a sum over the batch is far off
    assert -80 < line["final_elbo"] < -15, line


def test_train_throughput_many_seeds_count_every_seed():
    line = _run("train_throughput.py", "--impl", "jlvm", "--steps", "10", "--repeats", "1",
                "--num-seeds", "3")
    assert line["num_seeds"] == 3
    assert line["examples_per_s"] == pytest.approx(3 * 10 * 100 / (line["ms_per_step"] * 10
                                                                   / 1e3), rel=0.01)


def test_eval_throughput_jlvm_and_torch_agree():
    jlvm = _run("eval_throughput.py", "--impl", "jlvm", "--num-samples", "200",
                "--num-examples", "150", "--batch-size", "50", "--chunk-size", "100")
    assert jlvm["num_examples"] == 150 and jlvm["decoder_evals_per_s"] > 0
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[bench]')")
    torch = _run("eval_throughput.py", "--impl", "torch", "--num-samples", "200",
                 "--num-examples", "150", "--batch-size", "50", "--chunk-size", "100")
    # the same parameters and images, independent draws: the means differ by Monte Carlo
    # noise alone (about 0.01 nats here), while a wrong term (the 2 pi constants: 46 nats,
    # log K: 5.3 nats) would move them apart by far more than 0.5
    assert abs(jlvm["log_likelihood"] - torch["log_likelihood"]) < 0.5, (jlvm, torch)
