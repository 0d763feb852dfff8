"""The `jlvm` command: its options, what it prints, its exit status; end to end, with
tiny settings, in temporary directories (the run directory's own life: test_runs.py)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import background
import jax
import numpy as np
import pytest
from conftest import TINY

from jlvm import checkpoint, cli, runs


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "flow"], "--model must be one of vae, iwae, semi, svi, gmm, "
                                   "bernoulli-mixture, ppca, or a model of your own as "
                                   "FILE.py:FACTORY"),
    (["train", "--epochs", "-3"], "--epochs must be an integer >= 1, got -3"),
    (["train", "--hidden-dims", "0"], "--hidden-dims must be one or more integer widths in "
                                      "[1, 65536]"),
    (["train", "--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    (["train", "--seed", "-1"], "--seed must be an integer in [0, 4294967295]"),
    (["train", "--num-seeds", "0"], "--num-seeds must be an integer >= 1"),
    (["train", "--out", ""], "the run directory must be a non-empty path"),
    (["evaluate", ""], "the run directory must be a non-empty path"),
    (["train", "--batch-size", "5000"], "--batch-size (5000) must be at most the 1438 "
                                        "training examples of digits"),
    (["train", "--components", "2000", "--model", "gmm"], "--components (2000) must be at "
                                                          "most the 1438"),
    (["train", "--grad-estimator", "dreg"],
     "--grad-estimator for --model vae with a continuous z must be one of"),
    (["train", "--elbo-form", "kl", "--model", "iwae"], "--elbo-form does not apply to "
                                                        "--model iwae"),
    (["train", "--model", "gmm", "--num-samples", "5"], "--num-samples does not apply to "
                                                        "--model gmm"),
    (["train", "--inner-steps", "3"], "--inner-steps does not apply to --model vae"),
    (["train", "--data-path", "/tmp"], "--data-path applies to --data binarized-mnist only"),
    (["train", "--latent-dim", "100000000000"], "--latent-dim must be at most 65536"),
    (["train", "--elbo-form", "entropy", "--grad-estimator", "stl"], "--grad-estimator "
                                                                     "reparam"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1"),
    (["train", "--eval-every", "0"], "--eval-every must be an integer >= 1"),
    (["train", "--devices", "two"], "--devices must be a whole number or 'all'"),
    (["train", "--devices", "5"], "--devices must be between 1 and the 4 devices"),
    (["train", "--devices", "3"], "--batch-size (100) must be a multiple of --devices (3)"),
    (["train", "--model", "gmm", "--devices", "2"], "--devices above 1 applies to"),
    (["train", "--coordinator", "localhost:1"], "--coordinator needs --distributed"),
    (["train", "--resume"], "--resume needs --out RUN_DIR"),
    (["train", "--data", "binarized-mnist", "--data-path", "/nonexistent/jlvm"],
     "binarized MNIST not found"),
    (["evaluate", "/nonexistent/jlvm"], "holds no run (no config.json)"),
    (["evaluate", "/nonexistent/jlvm", "--num-samples", "0"], "--num-samples must be an "
                                                               "integer >= 1"),
    (["evaluate", "/nonexistent/jlvm", "--chunk-size", "0"], "--chunk-size must be"),
    (["sample", "/nonexistent/jlvm", "--out", "/nonexistent/x.png"], "folder /nonexistent "
                                                                     "does not exist"),
    (["sample", "/nonexistent/jlvm", "--out", "/tmp/jlvm-test-no-such.pgf"], "--out must end "
                                                                            "in one of"),
    (["sample", "/nonexistent/jlvm", "--n", "5000", "--out", "/tmp/jlvm-test-no-such.png"],
     "--n must be at most 1024"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(argv, message, tmp_path, capsys):
    if argv[0] == "train" and "--out" not in argv and "--resume" not in argv:
        argv = [*argv, "--out", tmp_path / "run"]
    tiny = TINY if argv[0] == "train" and "gmm" not in argv else []
    code, stdout, err = _run([argv[0], *tiny, *argv[1:]], capsys)  # later options win
    assert code == 2, err
    assert err.startswith(f"jlvm {argv[0]}: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and stdout == ""
    assert not (tmp_path / "run").exists()  # a refused run leaves nothing


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["train", "--hidden-dims"], "argument --hidden-dims: expected at least one argument"),
    (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ([], "the following arguments are required: command"),
    (["sample", "run"], "the following arguments are required: --out"),
])
def test_what_argparse_refuses_is_one_line_too(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "--help" in err


def test_an_unexpected_error_is_still_one_line(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runs, "sample", broken)
    code, _, err = _run(["sample", tmp_path, "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unexpected ZeroDivisionError" in err and "JLVM_TRACEBACK=1" in err
    monkeypatch.setenv("JLVM_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["sample", str(tmp_path), "--out", str(tmp_path / "x.png")])


def test_outputs_are_valid_json_and_sample_writes_the_format_asked(trained, tmp_path, capsys):
    out = trained("vae").path
    code, stdout, err = _run(["evaluate", out, "--num-samples", "10", "--num-examples", "1"],
                             capsys)
    assert code == 0, err
    line = json.loads(stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert line["num_examples"] == 1 and line["log_likelihood_se"] is None
    magic = {"jpg": b"\xff\xd8\xff", "pdf": b"%PDF", "png": b"\x89PNG"}
    for suffix, start in magic.items():
        picture = tmp_path / f"x.{suffix}"
        code, stdout, err = _run(["sample", out, "--n", "4", "--out", picture], capsys)
        assert code == 0 and picture.read_bytes().startswith(start), err
        assert json.loads(stdout)["out"] == str(picture)
    before = (tmp_path / "x.png").read_bytes()
    code, _, err = _run(["sample", out, "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "exists" in err and (tmp_path / "x.png").read_bytes() == before
    code, _, err = _run(["sample", out, "--out", tmp_path / "x.xyz"], capsys)
    assert code == 2 and ".png" in err and not (tmp_path / "x.xyz").exists()


def _killed():
    """A `jlvm train` process killed (SIGKILL) once it has written two checkpoints: its run
    directory."""
    run_dir = background.folder("killed") / "run"
    process = subprocess.Popen(background.jlvm("train", "--epochs", "400", "--out", run_dir,
                                                *TINY),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(checkpoint.steps(run_dir / "checkpoints")) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest interruption
    process.wait()
    return run_dir


@pytest.mark.background.with_args(_killed)
def test_killing_train_leaves_a_loadable_checkpoint_and_resume_finishes(capsys):
    run_dir = background.result(_killed)
    step = checkpoint.latest_step(run_dir / "checkpoints")
    assert step is not None and step < 400
    run = runs.load(run_dir)
    assert run.step == step and int(run.state.step) == step * 14
    # the kill is what needs a process of its own; the resume runs here, the same command
    code, _, err = _run(["train", "--epochs", step + 2, "--out", run_dir, "--resume"], capsys)
    assert code == 0, err
    assert checkpoint.latest_step(run_dir / "checkpoints") == step + 2
    assert [r["epoch"] for r in _records(run_dir)] == list(range(1, step + 3))


def test_num_seeds_trains_runs_equal_to_separate_runs(tmp_path, capsys):
    many, one = tmp_path / "many", tmp_path / "one"
    code, stdout, err = _run(["train", "--epochs", "2", "--num-seeds", "3", "--seed", "4",
                              "--out", many, *TINY], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["seeds"] == [4, 5, 6] and len(result["train_elbo_per_seed"]) == 3
    assert "mean of 3 seeds" in err
    records = _records(many)
    assert [(r["epoch"], r["seed"]) for r in records] == [(e, s) for e in (1, 2)
                                                          for s in (4, 5, 6)]
    code, stdout, err = _run(["train", "--epochs", "2", "--seed", "5", "--out", one, *TINY],
                             capsys)
    assert code == 0, err
    for a, b in zip(_records(one), [r for r in records if r["seed"] == 5], strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
    code, stdout, err = _run(["evaluate", many, "--num-samples", "20"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["seed"] for line in lines] == [4, 5, 6]
    code, stdout, err = _run(["evaluate", one, "--num-samples", "20"], capsys)
    np.testing.assert_allclose(json.loads(stdout)["log_likelihood"], lines[1]["log_likelihood"],
                               rtol=1e-5)
    # a resumed multi-seed run restores every seed's state
    code, stdout, err = _run(["train", "--epochs", "3", "--out", many, "--resume"], capsys)
    assert code == 0, err
    assert len(_records(many)) == 9


def test_checkpoint_every_keeps_the_two_newest(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["train", "--epochs", "5", "--checkpoint-every", "2", "--out", out,
                         *TINY], capsys)
    assert code == 0, err
    assert checkpoint.steps(out / "checkpoints") == [4, 5]


def test_eval_every_and_elbo_form(tmp_path, capsys):
    """--eval-every 2: the ELBOs after epochs 1, 2, 4 and the last (5), equal to those of a
    run that evaluates every epoch (evaluation never touches training); --elbo-form kl is
    stored in config.json and trains the VAE on the KL-form ELBO."""
    found = {}
    for name, extra in (("sparse", ["--eval-every", "2"]), ("every", [])):
        out = tmp_path / name
        code, stdout, err = _run(["train", "--epochs", "5", "--elbo-form", "kl", "--out", out,
                                  *TINY, *extra], capsys)
        assert code == 0, err
        found[name] = _records(out)
        assert json.loads((out / "config.json").read_text())["config"]["elbo_form"] == "kl"
        assert json.loads(stdout)["train_elbo"] == found[name][-1]["train_elbo"]
    sparse, every = found["sparse"], found["every"]
    assert [r["epoch"] for r in sparse] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in sparse if "train_elbo" in r] == [1, 2, 4, 5]
    for a in sparse:
        b = every[a["epoch"] - 1]
        np.testing.assert_allclose(a["train_elbo_during_epoch"], b["train_elbo_during_epoch"],
                                   rtol=1e-6)
        if "train_elbo" in a:
            np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-6)
    assert every[-1]["train_elbo"] > every[0]["train_elbo"]  # it trains
    from jlvm.runs.kinds import vae

    assert vae.ELBO_FORMS == sys.modules["jlvm.inference.amortized"].ELBO_FORMS


def test_devices_splits_batches_and_gives_the_one_device_numbers(trained, tmp_path, capsys):
    """`jlvm train/evaluate --devices all` on this session's four CPU devices (conftest)
    against --devices 1: the same numbers up to the order of floating-point sums."""
    assert jax.device_count() == 4
    found = {}
    for devices in ("1", "all"):
        if devices == "1":  # the default: the session's run of these settings (conftest)
            out = trained("vae").path
            assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 2
        else:
            out = tmp_path / f"devices-{devices}"
            code, _, err = _run(["train", "--epochs", "2", "--out", out, "--devices",
                                 devices, *TINY], capsys)
            assert code == 0, err
        code, stdout, err = _run(["evaluate", out, "--num-samples", "40", "--devices",
                                  devices], capsys)
        assert code == 0, err
        found[devices] = (_records(out), json.loads(stdout))
    for a, b in zip(found["1"][0], found["all"][0], strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
    np.testing.assert_allclose(found["1"][1]["log_likelihood"],
                               found["all"][1]["log_likelihood"], rtol=1e-5)


def test_distributed_training_over_two_processes_equals_one_device(trained, tmp_path):
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
    alone = trained("vae").path  # the same settings on one device
    for a, b in zip(_records(alone), _records(out), strict=True):
        np.testing.assert_allclose(a["train_elbo"], b["train_elbo"], rtol=1e-5)
    assert checkpoint.latest_step(out / "checkpoints") == 2
    assert int(runs.load(out).state.step) == int(runs.load(alone).state.step) > 0


def _wait_until_catching(process, number, timeout=60.0):
    """Until ``process`` has a handler of its own for signal ``number`` (Linux: the SigCgt
    mask in /proc/PID/status)."""
    status = pathlib.Path(f"/proc/{process.pid}/status")
    if not status.exists():  # not Linux: a moment that is usually enough
        time.sleep(0.3)
        return
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except FileNotFoundError:  # it has just ended
            break
        if int(fields["SigCgt"], 16) >> (number - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {process.pid} never caught signal {number} (exit status "
                         f"{process.poll()})")


def _steps_now(directory) -> list:
    """The checkpoints written so far, read while the writer may be renaming one: orbax's
    listing can stat a step folder that moved between its listing and its stat (a
    FileNotFoundError, seen on a busy machine); that is "not yet"."""
    try:
        return checkpoint.steps(directory)
    except FileNotFoundError:
        return []


def _signalled():
    """Two `jlvm train` processes stopped by a signal: SIGTERM while still starting, SIGINT
    after the first checkpoint. (exit status, stderr, run directory) of each."""
    command = background.jlvm("train", "--epochs", "400", *TINY)
    early, late = background.folder("early") / "run", background.folder("late") / "run"
    process = subprocess.Popen([*command, "--out", str(early)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # still starting (importing, reading data, compiling), but past the moment jlvm takes
    # over SIGTERM: before it, the signal's default action kills Python at once (exit -15),
    # which a fixed sleep of 0.3 s did not always wait for on a busy machine
    _wait_until_catching(process, signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    first = (process.returncode, err, early)
    process = subprocess.Popen([*command, "--out", str(late)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _steps_now(late / "checkpoints"):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return first, (process.returncode, err, late)


@pytest.mark.background.with_args(_signalled)
def test_a_signal_stops_training_between_steps_with_one_line():
    """Ctrl-C (SIGINT) or SIGTERM: the run stops at the next chunk of steps; before the
    first checkpoint nothing is left (the retry is not refused), after it the newest
    checkpoint is kept and --resume continues."""
    (code, err, early), (late_code, late_err, late) = background.result(_signalled)
    assert code == 2, err
    assert err.strip().splitlines()[-1] == ("jlvm train: stopped by SIGTERM; no checkpoint was "
                                            "written, so nothing was kept.")
    assert not early.exists()
    assert late_code == 2, late_err
    last = late_err.strip().splitlines()[-1]
    step = checkpoint.latest_step(late / "checkpoints")
    assert last == (f"jlvm train: stopped by SIGINT; checkpoint {step} is kept: continue with "
                    f"jlvm train --out {late} --resume."), late_err
    assert [r["epoch"] for r in _records(late)] == list(range(1, step + 1))
