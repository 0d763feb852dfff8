"""The `jlvm` command end to end, on tiny settings, in temporary directories."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jlvm import checkpoint, cli

TINY = ["--latent-dim", "2", "--hidden", "16", "--batch-size", "100"]
FILES = ["config.json", "metrics.jsonl", "samples.png", "reconstructions.png", "latent.png",
         "elbo.png"]


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _final_state(run_dir):
    _setup, state = cli._load_run(pathlib.Path(run_dir))
    return state


@pytest.mark.parametrize("model", ["vae", "iwae", "semi", "svi", "gmm"])
def test_train_writes_the_whole_run_directory(model, tmp_path, capsys):
    out = tmp_path / model
    extra = ["--inner-steps", "2"] if model in ("svi", "semi") else []
    extra += ["--components", "3"] if model == "gmm" else []
    code, stdout, err = _run(["train", "--model", model, "--epochs", "2", "--out", str(out),
                              *TINY, *extra], capsys)
    assert code == 0, err
    for name in FILES:
        assert (out / name).is_file(), name
    for name in ("samples.png", "reconstructions.png", "latent.png", "elbo.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["train_elbo"]) for r in records)
    assert json.loads(stdout)["run_dir"] == str(out)
    assert checkpoint.latest_step(out / "checkpoints") == 2

    code, stdout, err = _run(["evaluate", str(out), "--num-samples", "50"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    for field in ("log_likelihood", "elbo", "gap", "seconds", "bits_per_dim"):
        assert field in result
    # importance sampling's estimate is at least the ELBO (up to their standard errors)
    assert result["log_likelihood"] >= result["elbo"] - 3 * result["elbo_se"]

    if model in ("vae", "iwae", "semi"):
        code, stdout, err = _run(["evaluate", str(out), "--num-samples", "50", "--missing",
                                  "top-half"], capsys)
        assert code == 0, err
        masked = json.loads(stdout)
        assert masked["missing"] == "top-half"
        assert masked["log_likelihood"] > result["log_likelihood"]  # half the pixels

    png = tmp_path / f"{model}-samples.png"
    code, _, err = _run(["sample", str(out), "--n", "16", "--out", str(png)], capsys)
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG", err


def test_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _run(["train", "--epochs", "4", "--out", str(whole), *TINY], capsys)[0] == 0
    assert _run(["train", "--epochs", "2", "--out", str(split), *TINY], capsys)[0] == 0
    assert _run(["train", "--epochs", "4", "--out", str(split), "--resume"], capsys)[0] == 0
    for a, b in zip(jax.tree_util.tree_leaves(_final_state(whole)),
                    jax.tree_util.tree_leaves(_final_state(split)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = (split / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_killing_train_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "jlvm", "train", "--epochs", "400", "--out", str(run_dir),
               *TINY]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 240
    while time.time() < deadline and checkpoint.latest_step(run_dir / "checkpoints") in (None,
                                                                                          1, 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest interruption
    process.wait()
    step = checkpoint.latest_step(run_dir / "checkpoints")
    assert step is not None and step < 400
    state = _final_state(run_dir)  # loads
    assert int(state.step) == step * 14
    done = subprocess.run([*command[:5], str(step + 2), "--out", str(run_dir), "--resume"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert checkpoint.latest_step(run_dir / "checkpoints") == step + 2


def test_bad_input_stops_with_one_line_and_overwrites_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["train", "--epochs", "1", "--out", str(out), *TINY], capsys)[0] == 0
    before = (out / "metrics.jsonl").read_text()
    code, _, err = _run(["train", "--epochs", "1", "--out", str(out), *TINY], capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == before
    code, _, err = _run(["train", "--epochs", "-3", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--epochs must be >= 1" in err
    code, _, err = _run(["train", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "no config.json" in err
    code, _, err = _run(["train", "--resume", "--out", str(out), "--latent-dim", "5"], capsys)
    assert code == 2 and "latent_dim" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "flow"])
    assert exit_info.value.code == 2
    code, _, err = _run(["train", "--epochs", "3", "--learning-rate", "1e30", "--out",
                         str(tmp_path / "nan"), *TINY], capsys)
    assert code == 2 and "non-finite loss" in err
    code, _, err = _run(["sample", str(out), "--out", str(out / "samples.png")], capsys)
    assert code == 2 and "exists" in err
    code, _, err = _run(["evaluate", str(tmp_path / "none")], capsys)
    assert code == 2 and "no config.json" in err
    code, _, err = _run(["train", "--data", "binarized-mnist", "--data-path",
                         str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "binarized MNIST not found" in err


def test_default_output_directory_is_new_each_time(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = _run(["train", "--epochs", "1", *TINY], capsys)
    assert code == 0
    assert pathlib.Path(json.loads(stdout)["run_dir"]).parent == pathlib.Path("runs")


def test_num_seeds_trains_runs_equal_to_separate_runs(tmp_path, capsys):
    many, one = tmp_path / "many", tmp_path / "one"
    code, stdout, err = _run(["train", "--epochs", "2", "--num-seeds", "3", "--seed", "4",
                              "--out", str(many), *TINY], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["seeds"] == [4, 5, 6] and len(result["train_elbo_per_seed"]) == 3
    records = [json.loads(line) for line in (many / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["seed"]) for r in records] == [(e, s) for e in (1, 2)
                                                          for s in (4, 5, 6)]
    code, stdout, err = _run(["train", "--epochs", "2", "--seed", "5", "--out", str(one),
                              *TINY], capsys)
    assert code == 0, err
    alone = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(alone, [r for r in records if r["seed"] == 5], strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
        np.testing.assert_allclose(a["valid_elbo" if "valid_elbo" in a else "train_elbo"],
                                   b["valid_elbo" if "valid_elbo" in b else "train_elbo"],
                                   rtol=1e-5)
    code, stdout, err = _run(["evaluate", str(many), "--num-samples", "20"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["seed"] for line in lines] == [4, 5, 6]
    code, stdout, err = _run(["evaluate", str(one), "--num-samples", "20"], capsys)
    np.testing.assert_allclose(json.loads(stdout)["log_likelihood"], lines[1]["log_likelihood"],
                               rtol=1e-5)
    # a resumed multi-seed run restores every seed's state
    code, stdout, err = _run(["train", "--epochs", "3", "--out", str(many), "--resume"], capsys)
    assert code == 0, err
    assert len((many / "metrics.jsonl").read_text().splitlines()) == 9


def test_checkpoint_every_and_device_arguments(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["train", "--epochs", "5", "--checkpoint-every", "2", "--out", str(out),
                         *TINY], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == \
        ["4", "5"]  # the last two kept
    for argv, message in [
            (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
            (["--devices", "two"], "--devices must be a number or 'all'"),
            (["--devices", str(jax.device_count() + 1)], "--devices must be between 1"),
            (["--num-seeds", "0"], "--num-seeds must be >= 1")]:
        code, _, err = _run(["train", "--epochs", "1", "--out", str(tmp_path / "bad"), *TINY,
                             *argv], capsys)
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad" / "checkpoints").exists()


def test_eval_every_and_elbo_form(tmp_path, capsys):
    """--eval-every 2: the ELBOs after epochs 1, 2, 4 and the last (5), equal to those of a
    run that evaluates every epoch (evaluation never touches training); --elbo-form kl is
    stored in config.json and trains the VAE on the KL-form ELBO."""
    runs = {}
    for name, extra in (("sparse", ["--eval-every", "2"]), ("every", [])):
        out = tmp_path / name
        code, stdout, err = _run(["train", "--epochs", "5", "--elbo-form", "kl", "--out",
                                  str(out), *TINY, *extra], capsys)
        assert code == 0, err
        runs[name] = [json.loads(line) for line in (out / "metrics.jsonl").read_text()
                      .splitlines()]
        assert json.loads((out / "config.json").read_text())["config"]["elbo_form"] == "kl"
        assert json.loads(stdout)["train_elbo"] == runs[name][-1]["train_elbo"]
    sparse, every = runs["sparse"], runs["every"]
    assert [r["epoch"] for r in sparse] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in sparse if "train_elbo" in r] == [1, 2, 4, 5]
    for a in sparse:
        b = every[a["epoch"] - 1]
        np.testing.assert_allclose(a["train_elbo_during_epoch"], b["train_elbo_during_epoch"],
                                   rtol=1e-6)
        for field in ("train_elbo", "valid_elbo"):
            if field in a:
                np.testing.assert_allclose(a[field], b[field], rtol=1e-6)
    assert every[-1]["train_elbo"] > every[0]["train_elbo"]  # it trains
    assert (tmp_path / "sparse" / "elbo.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.ELBO_FORMS == sys.modules["jlvm.inference.amortized"].ELBO_FORMS
    for argv, message in [
            (["--eval-every", "0"], "--eval-every must be >= 1"),
            (["--elbo-form", "kl", "--model", "iwae"], "--elbo-form kl takes --model vae"),
            (["--elbo-form", "entropy", "--grad-estimator", "stl"], "--grad-estimator reparam")]:
        code, _, err = _run(["train", "--epochs", "1", "--out", str(tmp_path / "bad"), *TINY,
                             *argv], capsys)
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad" / "checkpoints").exists()


def test_devices_splits_batches_and_gives_the_one_device_numbers(tmp_path):
    """`jlvm train/evaluate --devices 4` on four simulated CPU devices against --devices 1."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    results = {}
    for devices in ("1", "all"):
        out = tmp_path / f"devices-{devices}"
        command = [sys.executable, "-m", "jlvm", "train", "--epochs", "2", "--out", str(out),
                   "--devices", devices, *TINY]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        evaluated = subprocess.run([sys.executable, "-m", "jlvm", "evaluate", str(out),
                                    "--num-samples", "40", "--devices", devices], env=env,
                                   capture_output=True, text=True, timeout=600)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        results[devices] = (records, json.loads(evaluated.stdout))
    for a, b in zip(results["1"][0], results["all"][0], strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
    np.testing.assert_allclose(results["1"][1]["log_likelihood"],
                               results["all"][1]["log_likelihood"], rtol=1e-5)
    bad = subprocess.run([sys.executable, "-m", "jlvm", "train", "--epochs", "1", "--out",
                          str(tmp_path / "odd"), "--devices", "3", *TINY], env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "must be a multiple of --devices" in bad.stderr


def test_distributed_training_over_two_processes_equals_one_device(tmp_path):
    """Two processes joined by jax.distributed (JAX's own runtime; gloo collectives on CPU),
    two simulated devices each: one run over 4 devices, written once, same numbers."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "distributed"
    workers = [subprocess.Popen(
        [sys.executable, "-m", "jlvm", "train", "--epochs", "2", "--out", str(out), *TINY,
         "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2",
         "--process-id", str(index)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for index in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
    # only process 0 reports and writes
    assert [line for line in outputs[0][0].splitlines() if line.startswith("{")]
    assert not [line for line in outputs[1][0].splitlines() if line.startswith("{")]
    alone = tmp_path / "alone"
    assert cli.main(["train", "--epochs", "2", "--out", str(alone), *TINY]) == 0
    for a, b in zip(*[[json.loads(line) for line in (d / "metrics.jsonl").read_text()
                       .splitlines()] for d in (alone, out)], strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
    assert checkpoint.latest_step(out / "checkpoints") == 2
    _, state = cli._load_run(out)
    _, reference = cli._load_run(alone)
    assert int(state.step) == int(reference.step) > 0
