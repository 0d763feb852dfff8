"""The benchmark scripts run, print the JSON they promise, and agree with each other.

Tiny sizes on the bundled digits; the peers (NumPyro, Pyro, PyTorch: ``pip install -e
'.[bench]'``) are exercised only where installed. No timing is asserted anywhere.

Each script runs in this process as Python runs a script (``runpy``, its folder first on
``sys.path``, ``sys.argv`` its command line): the same code as ``python benchmarks/SCRIPT``,
without a new process that starts JAX and compiles everything again (about 4 s a script)."""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import runpy
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def _benchmarks_importable():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path.remove(str(BENCHMARKS))


def _script(capsys, script, *arguments, data=("--data", "digits")) -> list[str]:
    """``python benchmarks/SCRIPT --data digits ARGUMENTS...`` in this process; the lines
    it printed on stdout."""
    import jax

    capsys.readouterr()
    argv = [str(BENCHMARKS / script), *data, *arguments]
    # the scripts broadcast biases implicitly (conftest makes rank promotion an error)
    with _benchmarks_importable(), mock.patch.object(sys, "argv", argv), \
            jax.numpy_rank_promotion("allow"):
        runpy.run_path(argv[0], run_name="__main__")
    return capsys.readouterr().out.strip().splitlines()


def _run(capsys, script, *arguments):
    """The last line the script printed, as JSON."""
    return json.loads(_script(capsys, script, *arguments)[-1])


@pytest.mark.parametrize("impl", ["numpyro", "pyro", "torch"])
def test_train_throughput_of_a_peer_prints_one_json_line(impl, capsys):
    if importlib.util.find_spec(impl) is None:
        pytest.skip(f"{impl} is not installed (pip install -e '.[bench]')")
    line = _run(capsys, "train_throughput.py", "--impl", impl, "--steps", "20", "--repeats", "1")
    assert line["impl"] == impl and line["examples_per_s"] > 0 and line["device"]
    # 40 steps from a fresh start on 64-pixel digits: every implementation's ELBO lies
    # between -80 and -15 nats per image; a wrong sign or a sum over the batch is far off
    assert -80 < line["final_elbo"] < -15, line


def test_train_throughput_many_seeds_count_every_seed(capsys):
    line = _run(capsys, "train_throughput.py", "--impl", "jlvm", "--steps", "10", "--repeats", "1",
                "--num-seeds", "3")
    assert line["num_seeds"] == 3
    assert line["examples_per_s"] == pytest.approx(3 * 10 * 100 / (line["ms_per_step"] * 10
                                                                   / 1e3), rel=0.01)


def test_train_throughput_of_convolutional_networks(capsys):
    line = _run(capsys, "train_throughput.py", "--impl", "jlvm", "--steps", "4", "--repeats", "1",
                "--architecture", "conv")
    assert line["architecture"] == "conv" and line["final_elbo"] < 0, line
    with pytest.raises(SystemExit):
        _run(capsys, "train_throughput.py", "--impl", "jax", "--architecture", "conv")


def test_train_throughput_side_by_side_prints_each_line_and_both_ratios(capsys):
    printed = _script(capsys, "train_throughput.py", "--impl", "jlvm", "jax", "--steps", "10",
                      "--repeats", "3")
    jlvm, jax, ratios = (json.loads(line) for line in printed[-3:])
    assert (jlvm["impl"], jax["impl"]) == ("jlvm", "jax")
    for line in (jlvm, jax):
        assert line["examples_per_s"] > 0 and line["device"]
        # 40 steps from a fresh start on 64-pixel digits: the ELBO lies between -80 and
        # -15 nats per image; a wrong sign or a sum over the batch is far off
        assert -80 < line["final_elbo"] < -15, line
    assert ratios["interleaved_repeats"] == 3
    assert ratios["ratios"]["jlvm/jax"] == pytest.approx(
        jlvm["examples_per_s"] / jax["examples_per_s"], abs=2e-3)
    # the paired ratio is the median of the per-repeat ratios (from the rounded times)
    per_repeat = sorted(b / a for a, b in zip(jlvm["repeats_s"], jax["repeats_s"], strict=True))
    assert ratios["paired_ratios"]["jlvm/jax"] == pytest.approx(per_repeat[1], rel=2e-3)


def test_train_throughput_times_incomplete_batches_beside_complete_ones(capsys):
    printed = _script(capsys, "train_throughput.py", "--impl", "jlvm", "jlvm-incomplete-mask",
                      "--steps", "10", "--repeats", "1", "--missing-rate", "0.5")
    complete, incomplete, ratios = (json.loads(line) for line in printed[-3:])
    assert incomplete["impl"] == "jlvm-incomplete-mask" and incomplete["missing_rate"] == 0.5
    assert "missing_rate" not in complete
    # half the pixels scored: the bound per image is about half the complete one's
    assert 0.3 < incomplete["final_elbo"] / complete["final_elbo"] < 0.7, (complete, incomplete)
    assert set(ratios["paired_ratios"]) == {"jlvm/jlvm-incomplete-mask"}
    with pytest.raises(SystemExit):
        _script(capsys, "train_throughput.py", "--impl", "jlvm-incomplete", "--missing-rate", "1")


def test_imputation_prints_a_row_per_pattern_and_the_table(capsys):
    """A tiny run on scikit-learn's breast-cancer table (standardized columns): one JSON
    row, then the Markdown table. Filling with column means has an RMSE near one standard
    deviation; EM on the observed entries of these strongly correlated columns is far
    below it even after two iterations."""
    printed = _script(capsys, "imputation.py", "--patterns", "mcar:0.5", "--epochs", "2",
                      "--num-samples", "20", "--em-iterations", "2",
                      data=("--data", "breast-cancer"))
    row = json.loads(printed[0])
    assert (row["data"], row["pattern"], row["metric"]) == ("breast-cancer", "mcar:0.5", "rmse")
    methods = ["jlvm_vae", "jlvm_iwae", "jlvm_gmm", "sklearn_mean", "sklearn_knn",
               "sklearn_iterative"]
    assert all(0 < row[m] < 3 for m in methods), row
    assert 0.8 < row["sklearn_mean"] < 1.2 and row["jlvm_gmm"] < 0.8 * row["sklearn_mean"], row
    assert row["jlvm_best_beats_every_sklearn"] == (min(row[m] for m in methods[:3])
                                                    < min(row[m] for m in methods[3:]))
    assert printed[1].startswith("| data | missing | metric |")
    assert printed[3].startswith("| breast-cancer | mcar:0.5 | rmse |")


def test_imputation_runs_a_subset_of_methods_and_marks_the_others(capsys):
    printed = _script(capsys, "imputation.py", "--patterns", "mcar:0.25", "--methods",
                      "gmm,mean", "--em-iterations", "2", data=("--data", "breast-cancer"))
    row = json.loads(printed[0])
    assert {k for k in row if k.startswith(("jlvm_", "sklearn_"))} == {
        "jlvm_gmm", "sklearn_mean", "jlvm_best_beats_every_sklearn"}
    assert row["jlvm_best_beats_every_sklearn"] == (row["jlvm_gmm"] < row["sklearn_mean"])
    assert printed[3].split(" | ")[3:6] == ["—", "—", f"{row['jlvm_gmm']:.4f}"]
    with pytest.raises(SystemExit):
        _script(capsys, "imputation.py", "--methods", "gmm,svm", data=())


def test_imputation_keeps_binary_imputations_in_range_and_reports_a_failed_method(capsys,
                                                                                 monkeypatch):
    import numpy as np
    from sklearn.impute import IterativeImputer

    with _benchmarks_importable():
        import imputation
    holes = np.where(np.random.default_rng(0).random((60, 5)) < 0.3, np.nan,
                     np.random.default_rng(1).random((60, 5)) < 0.5).astype(np.float32)
    binary = imputation.fit_sklearn("iterative", holes, True)
    assert (binary.min_value, binary.max_value) == (0.0, 1.0)
    filled = binary.transform(holes)
    assert filled.min() >= 0 and filled.max() <= 1
    assert imputation.fit_sklearn("iterative", holes, False).max_value == np.inf

    # a scikit-learn imputer that fails (its regressions diverged on binarized MNIST's
    # top half: "Input X contains infinity") is a cell of the table, not the run's end
    def diverged(self, X, y=None):
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")

    monkeypatch.setattr(IterativeImputer, "fit", diverged)
    printed = _script(capsys, "imputation.py", "--patterns", "mcar:0.25", "--methods",
                      "gmm,mean,iterative", "--em-iterations", "2",
                      data=("--data", "breast-cancer"))
    row = json.loads(printed[0])
    assert "sklearn_iterative" not in row and "infinity" in row["failed"]["sklearn_iterative"]
    assert row["jlvm_best_beats_every_sklearn"] == (row["jlvm_gmm"] < row["sklearn_mean"])
    assert printed[3].split(" | ")[-2] == "failed"


def test_step_cost_counts_the_matrix_products_and_times_three_variants(capsys):
    lines = [json.loads(line) for line in _script(capsys, "step_cost.py", "--steps", "10",
                                                  "--repeats", "2")]
    # multiply-adds of one example: the forward pass, every weight gradient, and every input
    # gradient except the first encoder layer's (the data are not differentiated)
    sizes = [(64, 200), (200, 200), (200, 100), (50, 200), (200, 200), (200, 64)]
    forward = sum(a * b for a, b in sizes)
    matmul_flops = 2 * 100 * (2 * forward + forward - 64 * 200)
    # XLA also counts the elementwise work (tanh, softplus, sampling): a few percent more
    assert matmul_flops <= lines[0]["step_flops"] < 1.05 * matmul_flops
    assert [line["variant"] for line in lines[1:]] == ["adam", "sgd", "gradient_only"]
    for line in lines[1:]:
        assert line["ms_per_step"] > 0 and len(line["repeats_s"]) == 2
        assert -80 < line["final_elbo"] < 0


def test_handwritten_vae_trains_and_evaluates(capsys):
    # the KL form's loss is checked against the joint form's in-process (below)
    line = _run(capsys, "handwritten_vae.py", "--epochs", "3", "--eval-samples", "500",
                "--eval-examples", "100", "--elbo-form", "kl")
    assert line["impl"] == "hand-written JAX" and line["eval_examples"] == 100
    assert line["elbo_form"] == "kl"
    # 3 epochs on the 64-pixel digits: an NLL of 25 to 60 nats per image, below the 44-nat
    # cost of coding the pixels as fair coins only once something has been learned
    assert 20 < line["test_nll"] < 60, line


def test_handwritten_kl_form_has_the_joint_forms_expectation():
    """The hand-written loss in its two forms, over 2000 draws on one batch: equal means
    within standard errors (a KL missing a term, e.g. the -1, is 25 nats off here)."""
    with _benchmarks_importable():
        import train_throughput
    import jax
    import numpy as np

    from jlvm import data

    X = np.asarray(data.load("digits").train[:50], np.float32)
    init, joint = train_throughput.jax_model(X.shape[1], "joint")
    _, kl = train_throughput.jax_model(X.shape[1], "kl")
    params = init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    with jax.numpy_rank_promotion("allow"):  # the scripts broadcast biases implicitly
        a, b = (np.asarray(jax.vmap(lambda k, f=f: f(params, k, X))(keys))
                for f in (joint, kl))
    se = np.hypot(a.std(), b.std()) / np.sqrt(keys.shape[0])
    assert abs(a.mean() - b.mean()) < 4 * se + 1e-4, (a.mean(), b.mean(), se)
    assert b.std() < a.std()  # the analytic KL leaves only the likelihood's noise
    with pytest.raises(ValueError, match="elbo_form"):
        train_throughput.jax_model(X.shape[1], "entropy")


@pytest.mark.skipif(not os.environ.get("JLVM_DATA_DIR") or not pathlib.Path(
    os.environ.get("JLVM_DATA_DIR", "/nonexistent"), "binarized_mnist.npz").is_file(),
    reason="the shared binarized MNIST is not available (JLVM_DATA_DIR)")
def test_binarized_mnist_table_runs_rows_through_the_jlvm_command(tmp_path, capsys):
    """The table script's ``jlvm`` commands (``python -m jlvm train`` and ``evaluate``)
    run in this process too: ``subprocess.run`` of ``[python, -m, jlvm, ...]`` is
    ``jlvm.cli.main`` here, its exit status and stdout as a process gives them."""
    from jlvm import cli

    real_run, commands = subprocess.run, []

    def jlvm_in_this_process(command, *args, **kwargs):
        if list(command[:3]) != [sys.executable, "-m", "jlvm"]:
            return real_run(command, *args, **kwargs)
        commands.append(command[3])
        assert kwargs.get("stdout") == subprocess.PIPE and kwargs.get("text"), kwargs
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli.main(list(command[3:]))
        return subprocess.CompletedProcess(command, code, printed.getvalue())

    # the table's protocol (784 pixels, 200-200 networks) on 1,000 of binarized MNIST's
    # training images: one epoch is 10 steps, not 500
    from jlvm import data

    mnist = data.binarized_mnist()
    small = tmp_path / "mnist-1000.npz"
    np.savez(small, train=mnist.train[:1000], valid=mnist.valid[:200], test=mnist.test[:200])
    runs = tmp_path / "table"
    with mock.patch.object(subprocess, "run", jlvm_in_this_process):
        printed = _script(capsys, "binarized_mnist_table.py", "--only", "vaekl", "--vae-epochs",
                          "1", "--eval-samples", "20", "--eval-examples", "100",
                          "--eval-every", "1", "--seed", "3", "--runs", str(runs),
                          "--data", str(small), data=())
    assert commands == ["train", "evaluate"]
    rows = [json.loads(line) for line in (runs / "table.jsonl").read_text().splitlines()]
    assert [json.loads(line) for line in printed if line.startswith("{")] == rows
    # one row, the KL form: its option travels through jlvm train into config.json
    assert [(r["row"], r["elbo_form"]) for r in rows] == [("vaekl", "kl")]
    for r in rows:
        config = json.loads((runs / r["row"] / "config.json").read_text())["config"]
        assert (config["elbo_form"], config["latent_dim"], config["epochs"], config["seed"]) \
            == (r["elbo_form"], 50, 1, 3) and r["seed"] == 3
        # ten steps: an NLL between a trained model's (about 90) and uniform pixels'
        # (784 log 2 = 543 nats); the IS estimate is at least the ELBO, and no reference is
        # printed for data other than the full binarized MNIST
        assert 100 < r["test_nll"] < 543 and r["test_nll"] <= -r["test_elbo"] + 1.0, r
        assert r["reference_nll"] is None and r["eval_examples"] == 100
    assert "ELBO (KL form)" in (runs / "table.md").read_text()
    with pytest.raises(SystemExit) as refused:  # argparse's parser.error
        _script(capsys, "binarized_mnist_table.py", "--only", "vae", "--runs", str(runs),
                data=())
    assert refused.value.code == 2 and "exists" in capsys.readouterr().err


def test_handwritten_evaluator_agrees_with_jlvm_evaluate():
    """Two independent importance samplers of log p(x), on the same parameters and images."""
    with _benchmarks_importable():
        import eval_throughput
        import handwritten_vae
    import jax
    import numpy as np

    from jlvm import data, evaluate
    from jlvm.models import vae

    X = np.asarray(data.load("digits").test[:100], np.float32)
    params = vae.init(jax.random.PRNGKey(0), X.shape[1], 50, hidden_dims=(200, 200))
    as_dicts = {name: [{"w": w, "b": b} for w, b in eval_throughput._layers(module)]
                for name, module in (("encoder", params.encoder), ("decoder", params.decoder))}
    theirs = handwritten_vae.log_likelihoods(as_dicts, X, jax.random.PRNGKey(1), 1000)
    ours = np.asarray(evaluate.vae_log_likelihood(jax.random.PRNGKey(2), params, X, 1000))
    # independent draws, and this untrained encoder is a poor proposal: per image the two
    # differ by Monte Carlo noise of a few nats, so compare the mean difference with its
    # standard error. A dropped constant (2 pi terms: 46 nats; log K: 6.9) is far outside.
    assert np.all(np.isfinite(theirs)) and np.all(np.isfinite(ours))
    difference = theirs - ours
    se = difference.std(ddof=1) / np.sqrt(difference.size)
    assert se < 0.5
    assert abs(difference.mean()) < 4 * se, (difference.mean(), se)


def test_eval_throughput_jlvm_and_torch_agree(capsys):
    jlvm = _run(capsys, "eval_throughput.py", "--impl", "jlvm", "--num-samples", "200",
                "--num-examples", "150", "--batch-size", "50", "--chunk-size", "100")
    assert jlvm["num_examples"] == 150 and jlvm["decoder_evals_per_s"] > 0
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[bench]')")
    torch = _run(capsys, "eval_throughput.py", "--impl", "torch", "--num-samples", "200",
                 "--num-examples", "150", "--batch-size", "50", "--chunk-size", "100")
    # the same parameters and images, independent draws: the means differ by Monte Carlo
    # noise alone (about 0.01 nats here), while a wrong term (the 2 pi constants: 46 nats,
    # log K: 5.3 nats) would move them apart by far more than 0.5
    assert abs(jlvm["log_likelihood"] - torch["log_likelihood"]) < 0.5, (jlvm, torch)


def test_gpu_check_script_parses_and_refuses_what_it_cannot_do(tmp_path):
    """benchmarks/gpu_check.sh runs only where a GPU is (its --quick run on a CPU is
    documented in benchmarks/README.md); here: its syntax, and one-line refusals."""
    script = str(BENCHMARKS / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "binarized_mnist.npz").write_bytes(b"")  # only its presence is checked first
    env = {**os.environ, "JLVM_DATA_DIR": str(data), "JLVM_GPU_CHECK_CPU": "0"}
    for arguments, message in ((["--table-epochs", "0"], "--table-epochs must be a positive"),
                               (["--bogus"], "unknown argument --bogus"),
                               ([], "JAX sees no GPU")):
        done = subprocess.run(["bash", script, "--out", str(tmp_path / "out"), *arguments],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_encoder_input_compares_what_the_encoder_sees_on_the_same_holes(capsys):
    import numpy as np

    with _benchmarks_importable():
        import encoder_input
    # top-half: half the training images miss their top half, every test image does
    train, test = encoder_input.masks("top-half", (4000, 64), (10, 64), seed=0)
    assert np.array_equal(test[0], np.arange(64) >= 32) and test.all(axis=0)[32:].all()
    hidden = ~train.all(axis=1)
    assert abs(hidden.mean() - 0.5) < 4 * np.sqrt(0.25 / 4000)
    assert np.array_equal(train[hidden], np.broadcast_to(np.arange(64) >= 32,
                                                          (hidden.sum(), 64)))
    train, test = encoder_input.masks("mcar:0.3", (4000, 64), (1000, 64), seed=0)
    assert abs((~train).mean() - 0.3) < 4 * np.sqrt(0.21 / train.size)
    assert not np.array_equal(train[:1000], test)  # the test split's holes are its own
    printed = _script(capsys, "encoder_input.py", "--epochs", "1", "--test-rows", "40",
                      "--num-samples", "5", "--patterns", "mcar:0.5,top-half")
    rows = [json.loads(line) for line in printed]
    assert [(r["pattern"], r["encoder_input"]) for r in rows] == [
        ("mcar:0.5", "x"), ("mcar:0.5", "x-and-mask"), ("top-half", "x"),
        ("top-half", "x-and-mask")]
    assert all(r["test_rows"] == 40 and r["test_log_p_x_obs"] < 0 and r["se"] > 0
               and r["train_elbo_last_epoch"] < 0 for r in rows)
    with pytest.raises(SystemExit):
        _script(capsys, "encoder_input.py", "--patterns", "mcar:1")


def test_compile_once_times_a_second_identical_model(capsys):
    """benchmarks/compile_once.py: one JSON line, the four calls' seconds side by side."""
    line = _run(capsys, "compile_once.py", "--num-samples", "4")
    assert line["data"] == "digits" and line["images"] == 100 and line["num_samples"] == 4
    for name in ("first_call_s", "second_model_s", "compiled_again_s", "run_only_s"):
        assert line[name] > 0, name


def test_ais_linear_gaussian_prints_every_estimator_side_by_side(capsys):
    """benchmarks/ais_linear_gaussian.py: a row per number of steps, each estimator's error
    against the exact log p(x) and its time; IS gets AIS's cost in draws."""
    line = json.loads(_script(capsys, "ais_linear_gaussian.py", "--steps", "3", "--repeats",
                              "1", "--points", "2", data=())[-1])
    (row,) = line["rows"]
    assert row["steps"] == 3 and row["cost_per_example"] == 16 * 2 * 11 + 16 + 8 * 50 * 11
    for name in ("IS, prior", "IS, narrow q", "AIS, prior", "AIS, narrow q",
                 "reverse AIS, prior"):
        assert np.isfinite(row[name]["error_mean"]) and row[name]["ms_per_example"] > 0, name
    assert row["reverse AIS, prior"]["error_mean"] > 0  # an upper bound: above log p(x)


def test_ais_mnist_compares_is_and_ais_on_the_same_images(trained, capsys):
    """benchmarks/ais_mnist.py on a digits run: a JSON line per run with the ELBO, IS, AIS
    at each T, their paired difference and the BDMC sandwich, then the table."""
    # the settings of test_runs_ais.py's AIS on the same run: XLA's compilation is reused
    printed = _script(capsys, "ais_mnist.py", str(trained("vae").path), "--examples", "6",
                      "--is-samples", "20", "--ais-steps", "4", "--chains", "2",
                      "--bdmc-examples", "4", data=())
    line = json.loads(printed[0])
    row = line["ais"]["4"]
    assert line["examples"] == 6 and line["is_20"]["mean"] > line["elbo"]["mean"]
    assert row["ais_minus_is"]["mean"] == pytest.approx(
        row["log_likelihood"]["mean"] - line["is_20"]["mean"], abs=0.01)
    assert row["bdmc_gap"]["mean"] > -3 * row["bdmc_gap"]["se"]  # upper above lower
    assert row["bdmc_upper"]["mean"] < 0  # log-probabilities of binary images
    assert any("AIS - IS" in text for text in printed[1:])


def test_gmm_covariance_prints_a_row_per_type_and_the_table(capsys):
    printed = _script(capsys, "gmm_covariance.py", "--iterations", "3", "--repeats", "1",
                      "--types", "diag,tied", data=("--data", "digits-gray"))
    rows = [json.loads(line) for line in printed[:2]]
    assert [row["covariance_type"] for row in rows] == ["diag", "tied"]
    for row in rows:  # same start, same iterations: the same mixture
        for name in ("train_log_likelihood", "test_log_likelihood", "bic"):
            assert abs(row[f"jlvm_{name}"] - row[f"sklearn_{name}"]) <= 1e-5 * abs(
                row[f"sklearn_{name}"]) + 1e-4, (name, row)
    assert printed[-2].startswith("| diag |") and printed[-1].startswith("| tied |")


def test_bernoulli_mixture_prints_exact_likelihoods_and_the_rand_index(capsys):
    import jax
    from sklearn.metrics import adjusted_rand_score

    from jlvm import data
    from jlvm.models import bernoulli_mixture as bm

    printed = _script(capsys, "bernoulli_mixture.py", "--components", "2,5",
                      "--iterations", "4")
    rows = [json.loads(line) for line in printed[:2]]
    assert [row["components"] for row in rows] == [2, 5]
    # the K = 5 row recomputed here from the same start and iterations
    digits = data.digits()
    fitted, _ = bm.fit_em(bm.init_from_data(jax.random.PRNGKey(0), digits.train, 5),
                          digits.train, 4)
    log_p = jax.vmap(bm.log_marginal, in_axes=(None, 0))(fitted, digits.test)
    assert abs(rows[1]["test_log_likelihood"] - float(np.mean(log_p))) < 2e-3
    components = jax.vmap(lambda x: bm.posterior(fitted, x).logits)(digits.test).argmax(1)
    assert abs(rows[1]["adjusted_rand_index"]
               - adjusted_rand_score(digits.test_labels, np.asarray(components))) < 1e-4
    assert rows[1]["trace_never_decreased"] and rows[1]["seconds_per_iteration"] > 0
    assert printed[-1].startswith("| digits | 5 | 4 |")


def test_binary_latents_prints_every_estimators_reports_and_an_exact_check(capsys):
    printed = _script(capsys, "binary_latents.py", "--latent-dim", "4", "--models", "linear",
                      "--estimators", "disarm,vimco3", "--epochs", "2", "--report-every", "1",
                      "--snr-examples", "8", "--snr-draws", "4", "--test-examples", "40",
                      "--is-samples", "200")
    lines = [json.loads(line) for line in printed if line.startswith("{")]
    reports = [line for line in lines if "snr_epochs" not in line]
    rows = [line for line in lines if "snr_epochs" in line]
    assert [(r["estimator"], r["epoch"]) for r in reports] == [
        ("disarm", 1), ("disarm", 2), ("vimco3", 1), ("vimco3", 2)]
    assert [row["learner"] for row in rows] == ["elbo, K = 2, disarm",
                                                 "iwae, K = 3, score_function"]
    for row in rows:
        # at L = 4 IS with 200 draws of the encoder is within a few hundredths of a nat of
        # the exact sum over the 16 values of z, and below it in expectation
        assert abs(row["test_log_likelihood_is"] - row["test_log_likelihood_exact"]) < 0.05
        assert row["train_elbo"] < 0 and row["test_examples"] == 40
        assert all(0 < snr < np.inf for snr in row["snr_encoder"] + row["snr_decoder"])
    assert printed[-2].startswith("| linear | disarm |")
    assert printed[-1].startswith("| linear | vimco3 |")
