"""jlvm.runs: the life of a run directory, through ``jlvm`` and from Python.

A run is owned by one process, never overwritten or mixed, survives damage to its newest
checkpoint, and a failure never blocks the retry. Runs that only need reading share the
session's trained directories (conftest ``trained``); the others copy one first.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import background
import jax
import numpy as np
import pytest
from conftest import TINY

from jlvm import checkpoint, cli, runs
from jlvm.runs import _config, _figures, _setup, _training

MODELS = ("vae", "iwae", "semi", "svi", "gmm")
FIGURES = ("samples.png", "reconstructions.png", "latent.png", "elbo.png")
HEADLINE = {"iwae": "train_iwae_bound", "gmm": "train_log_likelihood"}


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder: pathlib.Path) -> dict:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text()
            .splitlines()]


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# ------------------------------------------------------------ a whole run directory


@pytest.mark.parametrize("model", MODELS)
def test_a_run_directory_holds_everything_and_evaluates(model, trained, capsys, tmp_path):
    run = trained(model)
    out = run.path
    for name in ("config.json", "metrics.jsonl", *FIGURES):
        assert (out / name).is_file(), name
        # readable like every other file (mkstemp's 0600 is not kept)
        assert (out / name).stat().st_mode & 0o777 == _file_mode(), name
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if ".jlvm-tmp-" in p.name]
    records = _records(out)
    headline = HEADLINE.get(model, "train_elbo")
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r[headline]) for r in records)
    result = json.loads(run.stdout)
    assert result["run_dir"] == str(out) and result[headline] == records[-1][headline]
    assert result["likelihood_type"] == ("density" if model == "gmm" else "probability")
    assert checkpoint.steps(out / "checkpoints") == [1, 2]

    code, stdout, err = _run(["evaluate", out, "--num-samples", "50"], capsys)
    assert code == 0, err
    line = json.loads(stdout)
    assert line["epoch"] == 2 and line["split"] == "test"
    # importance sampling's estimate is at least the ELBO (up to their standard errors)
    assert line["log_likelihood"] >= line["elbo"] - 3 * line["elbo_se"]
    if model == "gmm":  # exact, and a density: no bits per dimension
        assert line["exact"] and line["gap"] == 0.0 and line["bits_per_dim"] is None
        assert line["likelihood_type"] == "density"
    else:
        assert line["likelihood_type"] == "probability" and line["bits_per_dim"] > 0
    # every model scores incomplete data (a probability of half the pixels is larger)
    code, stdout, err = _run(["evaluate", out, "--num-samples", "50", "--missing",
                              "top-half"], capsys)
    assert code == 0, err
    masked = json.loads(stdout)
    assert masked["missing"] == "top-half"
    if model != "gmm":
        assert masked["log_likelihood"] > line["log_likelihood"]
    picture = tmp_path / "samples.png"
    code, stdout, err = _run(["sample", out, "--n", "16", "--out", picture], capsys)
    assert code == 0 and picture.read_bytes()[:4] == b"\x89PNG", err
    assert picture.stat().st_mode & 0o777 == _file_mode()


def test_resume_equals_an_uninterrupted_run(trained, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert _run(["train", "--epochs", "3", "--out", whole, *TINY], capsys)[0] == 0
    split = trained("vae").copy(tmp_path / "split")  # 2 epochs
    code, _, err = _run(["train", "--epochs", "3", "--out", split, "--resume"], capsys)
    assert code == 0, err
    for a, b in zip(jax.tree_util.tree_leaves(runs.load(whole).state),
                    jax.tree_util.tree_leaves(runs.load(split).state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["epoch"] for r in _records(split)] == [1, 2, 3]


def test_the_python_api_trains_resumes_and_evaluates(tmp_path):
    config = runs.make_config(model="iwae", epochs=1, latent_dim=2, hidden_dims=(16,))
    assert config.num_samples == 5  # an IWAE's default K
    out = tmp_path / "api"
    result = runs.train(config, out)
    assert result["epochs"] == 1 and np.isfinite(result["train_iwae_bound"])
    assert result["train_iwae_bound"] > result["train_elbo"]  # K=5 against K=1
    assert runs.resume(out, epochs=2)["epochs"] == 2
    loaded = runs.load(out)
    assert loaded.step == 2 and loaded.config == runs.make_config(
        model="iwae", epochs=2, latent_dim=2, hidden_dims=(16,))
    (line,) = runs.evaluate(out, num_samples=20, num_examples=30)
    assert line["num_examples"] == 30 and line["seed"] == 0
    with pytest.raises(runs.RunError, match="--latent-dim"):
        runs.make_config(latent_dim=0)
    with pytest.raises(runs.RunError, match="unknown setting"):
        runs.make_config(latent_dims=3)


def test_the_encoders_posterior_family_is_a_setting_that_evaluate_and_resume_honour(
        tmp_path, trained):
    config = runs.make_config(model="vae", epochs=1, latent_dim=2, hidden_dims=(16,),
                              posterior="full")
    out = tmp_path / "full"
    runs.train(config, out)
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["posterior"] == "full"
    loaded = runs.load(out)
    assert loaded.config.posterior == "full"
    assert runs.resume(out, epochs=2)["epochs"] == 2
    (line,) = runs.evaluate(out, num_samples=20, num_examples=30)
    assert np.isfinite(line["log_likelihood"])
    with pytest.raises(runs.RunError, match="--posterior must be one of diagonal, full, flow"):
        runs.make_config(posterior="planar")
    with pytest.raises(runs.RunError, match="--posterior does not apply to --model svi"):
        runs.make_config(model="svi", posterior="full")
    # a run written before the setting existed is a diagonal one, and still evaluates
    old = trained("vae").copy(tmp_path / "old")
    config_file = old / "config.json"
    stored = json.loads(config_file.read_text())
    del stored["config"]["posterior"]
    config_file.write_text(json.dumps(stored))
    assert runs.load(old).config.posterior == "diagonal"
    (line,) = runs.evaluate(old, num_samples=20, num_examples=30)
    assert np.isfinite(line["log_likelihood"])


# ----------------------------------------------------- failures never block a retry


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "D"
    code, _, err = _run(["train", "--learning-rate", "1e4", "--epochs", "3", "--out", out,
                         *TINY], capsys)
    assert code == 2 and "non-finite loss" in err and len(err.strip().splitlines()) == 1, err
    assert "nothing was kept" in err and not out.exists()
    # the retry the message suggests is not refused
    code, _, err = _run(["train", "--learning-rate", "1e-3", "--epochs", "1", "--out", out,
                         *TINY], capsys)
    assert code == 0, err
    # a folder that existed before keeps existing, empty of the failed run's files
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _, err = _run(["train", "--learning-rate", "1e4", "--epochs", "3", "--out",
                         existing, *TINY], capsys)
    assert code == 2 and sorted(p.name for p in existing.iterdir()) == [".jlvm.lock"]


def test_a_failed_run_leaves_no_orphan_in_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["train", "--learning-rate", "1e4", "--epochs", "2", *TINY], capsys)
    assert code == 2, err
    assert not list((tmp_path / "runs").glob("*"))
    # an overflowing seed is refused before anything exists (2**32 would repeat seed 0)
    code, _, err = _run(["train", "--seed", str(2**32), "--epochs", "1", *TINY], capsys)
    assert code == 2 and "--seed must be an integer in [0, 4294967295]" in err
    assert not list((tmp_path / "runs").glob("*"))
    # the default --out is new each time
    code, stdout, err = _run(["train", "--epochs", "1", *TINY], capsys)
    assert code == 0, err
    assert pathlib.Path(json.loads(stdout)["run_dir"]).parent == pathlib.Path("runs")


def test_a_run_directory_in_use_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".jlvm.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # what a running jlvm train holds
        code, _, err = _run(["train", "--epochs", "1", "--out", out, *TINY], capsys)
        assert code == 2 and "in use by another jlvm process" in err
        assert sorted(p.name for p in out.iterdir()) == [".jlvm.lock"]
    # released, as the kernel releases it when its holder dies: the directory is usable
    code, _, err = _run(["train", "--epochs", "1", "--out", out, *TINY], capsys)
    assert code == 0, err


def _two_at_once():
    """Two `jlvm train --out D` processes started together (seeds 1 and 2): D, and each
    one's (exit status, stdout, stderr)."""
    out = background.folder("same") / "run"
    processes = [subprocess.Popen(background.jlvm("train", "--epochs", "1", "--seed", seed,
                                                  "--out", out, *TINY),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    return out, [(p.returncode, stdout, stderr)
                 for p, (stdout, stderr) in zip(processes, outputs, strict=True)]


@pytest.mark.background.with_args(_two_at_once)
def test_two_runs_started_together_one_owns_the_directory():
    out, finished = background.result(_two_at_once)
    codes = sorted(code for code, _, _ in finished)
    assert codes == [0, 2], finished
    winner = next(i for i, (code, _, _) in enumerate(finished) if code == 0)
    loser_err = finished[1 - winner][2].strip().splitlines()
    assert len(loser_err) == 1 and ("in use" in loser_err[0] or "already holds" in loser_err[0])
    # nothing mixed: the config, the metrics and the parameters are the winner's
    seed = (1, 2)[winner]
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == seed
    result = json.loads(finished[winner][1])
    assert _records(out)[-1]["train_elbo"] == result["train_elbo"]
    assert [r["seed"] for r in _records(out)] == [seed]


def test_resume_refuses_contradictions_and_changes_nothing(trained, tmp_path, capsys):
    out = trained("vae").copy(tmp_path / "run")
    before = _snapshot(out)
    for argv, message in [
            (["--epochs", "1"], "--epochs 1 is fewer than the 2 epochs"),
            (["--latent-dim", "5"], "these differ from"),
            (["--model", "iwae"], "--model")]:
        code, _, err = _run(["train", "--resume", "--out", out, *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(out) == before
    code, stdout, err = _run(["train", "--resume", "--epochs", "2", "--out", out], capsys)
    assert code == 0 and json.loads(stdout)["already_completed"], err
    assert _snapshot(out) == before
    code, _, err = _run(["train", "--resume"], capsys)
    assert code == 2 and "--resume needs --out" in err


# -------------------------------------------------------------- damaged checkpoints


def _damage(step_folder: pathlib.Path, how: str) -> None:
    if how == "truncated":  # every array file cut to half its length
        for path in (step_folder / "default" / "d").iterdir():
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size // 2)
    elif how == "missing_metadata":
        (step_folder / "default" / "manifest.ocdbt").unlink()
    elif how == "empty_step_folder":
        for path in sorted(step_folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()


@pytest.mark.parametrize("how", ["truncated", "missing_metadata", "empty_step_folder"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact(how, trained, tmp_path,
                                                                      capsys):
    out = trained("vae").copy(tmp_path / "run")
    _damage(out / "checkpoints" / "2", how)
    code, stdout, err = _run(["evaluate", out, "--num-samples", "10"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["epoch"] == 1
    warnings = err.strip().splitlines()
    assert len(warnings) == 1 and "checkpoint 2" in warnings[0] and "using checkpoint 1" in \
        warnings[0], err
    code, stdout, err = _run(["train", "--resume", "--epochs", "3", "--out", out], capsys)
    assert code == 0, err
    assert "moved to" in err and (out / "damaged-checkpoints" / "2").is_dir()
    assert checkpoint.steps(out / "checkpoints") == [2, 3]
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3]


def test_no_intact_checkpoint_is_one_clear_error(trained, tmp_path, capsys):
    out = trained("vae").copy(tmp_path / "run")
    for step in ("1", "2"):
        _damage(out / "checkpoints" / step, "missing_metadata")
    before = _snapshot(out)
    for argv in (["evaluate", out], ["train", "--resume", "--epochs", "3", "--out", out]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and "no intact checkpoint" in err, err
        assert len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before


# ------------------------------------------ paths that cannot be read or written


@contextlib.contextmanager
def _unprivileged():
    """File permissions as an ordinary user sees them (root ignores them)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_paths_that_cannot_be_used_are_one_line_and_exit_2(tmp_path, capsys):
    import jlvm.data  # noqa: F401  (with the stdlib it needs: root's folders are closed to
    # the unprivileged user, who could not import them)
    base = pathlib.Path(tempfile.mkdtemp())  # not under pytest's private (0700) folder
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        writable = base / "writable"
        writable.mkdir()
        writable.chmod(0o777)
        unreadable = base / "binarized_mnist.npz"
        np.savez(unreadable, train=np.zeros((2, 784)), valid=np.zeros((2, 784)),
                 test=np.zeros((2, 784)))
        unreadable.chmod(0o000)
        with _unprivileged():
            code, _, err = _run(["train", "--epochs", "1", "--out", locked / "run", *TINY],
                                capsys)
            assert code == 2 and "cannot create the run directory" in err
            assert "Permission denied" in err and str(locked / "run") in err
            code, _, err = _run(["train", "--data", "binarized-mnist", "--data-path", unreadable,
                                 "--epochs", "1", "--out", writable / "run", *TINY], capsys)
            assert code == 2 and "Permission denied" in err and str(unreadable) in err, err
            assert not (writable / "run").exists()  # the failed start left nothing
    finally:
        for path in (locked, writable, unreadable):
            path.chmod(0o755)
        import shutil

        shutil.rmtree(base)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in [(a_file, "exists and is not a directory"),
                         (a_file / "run", "cannot create the run directory")]:
        code, _, err = _run(["train", "--epochs", "1", "--out", out, *TINY], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    truncated = tmp_path / "binarized_mnist.npz"
    np.savez(truncated, train=np.zeros((3, 784)), valid=np.zeros((3, 784)),
             test=np.zeros((3, 784)))
    truncated.write_bytes(truncated.read_bytes()[:300])
    code, _, err = _run(["train", "--data", "binarized-mnist", "--data-path", truncated,
                         "--out", tmp_path / "m"], capsys)
    assert code == 2 and "not a readable .npz" in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_earlier(trained, tmp_path):
    out = trained("vae").copy(tmp_path / "run")

    # writing past 4 KB fails with EFBIG, as writing to a full disk fails with ENOSPC
    limited = ("import resource, runpy, signal, sys; "
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
               "sys.argv = ['jlvm', *sys.argv[1:]]; runpy.run_module('jlvm', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", limited, "train", "--resume", "--epochs", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          # the session's compilation cache is read (the session compiled
                          # these programs), never written: no file of its own past 4 KB
                          env={**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1e9"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not write checkpoint 3" in lines[0], done.stderr
    assert "File too large" in lines[0]
    assert runs.load(out).step == 2  # the earlier checkpoint is intact
    assert [r["epoch"] for r in _records(out)] == [1, 2]


@pytest.mark.parametrize("damage", ["truncated", "unknown_key", "bad_value"])
def test_a_damaged_config_json_is_one_line(damage, trained, tmp_path, capsys):
    out = trained("vae").copy(tmp_path / "run")
    config = out / "config.json"
    text = config.read_text()
    if damage == "truncated":
        config.write_text(text[: len(text) // 2])
    else:
        stored = json.loads(text)
        stored["config"].update({"latent_dims": 3} if damage == "unknown_key"
                                else {"latent_dim": -1})
        config.write_text(json.dumps(stored))
    before = _snapshot(out)
    message = {"truncated": "not valid JSON", "unknown_key": "unknown key(s) latent_dims",
               "bad_value": "--latent-dim must be"}[damage]
    for argv in (["evaluate", out], ["train", "--resume", "--epochs", "3", "--out", out]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and message in err and str(config) in err, err
        assert len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_owner(trained, tmp_path,
                                                                      capsys):
    out = trained("vae").copy(tmp_path / "run")
    stale = out / ".samples.png.jlvm-tmp-k1ll3d"  # what kill -9 mid-figure leaves
    stale.write_bytes(b"\x89PNG half")
    code, _, err = _run(["train", "--resume", "--epochs", "3", "--out", out], capsys)
    assert code == 0, err
    assert not stale.exists()
    assert not [p for p in out.iterdir() if ".jlvm-tmp-" in p.name]


# ------------------------------------------------------- outputs tell the truth


def _texts(figure) -> str:
    import matplotlib.text

    return " | ".join(t.get_text() for t in figure.findobj(matplotlib.text.Text))


def test_figures_say_what_they_show(trained):
    texts = {}
    for model in ("vae", "gmm"):
        run = runs.load(trained(model).path)
        figures = _figures.build_all(run.setup, run.state, _records(trained(model).path))
        texts[model] = {name: _texts(figure) for name, figure in figures.items()}
    vae, gmm = texts["vae"], texts["gmm"]
    assert "E[x | z]" in vae["samples.png"] and "z ~ p(z)" in vae["samples.png"]
    assert "x ~ p(x)" in gmm["samples.png"] and "E[x" not in gmm["samples.png"]
    assert "E_q[z | x]" in vae["reconstructions.png"]
    assert "most probable component" in gmm["reconstructions.png"]
    assert "E_q" not in gmm["reconstructions.png"]
    assert "PC 1 of x" in gmm["latent.png"] and "z_1" not in gmm["latent.png"]
    assert "most probable component" in gmm["latent.png"] and "label" not in gmm["latent.png"]
    assert "class label" in vae["latent.png"]
    assert "density" in gmm["elbo.png"] and "density" not in vae["elbo.png"]


def test_a_one_epoch_curve_is_drawn_with_markers():
    from jlvm import plots

    figure = plots.training_curves([{"epoch": 1, "train_elbo": -40.0}])
    (line,) = figure.axes[0].lines
    assert list(line.get_xdata()) == [1] and line.get_marker() not in (None, "None", "")


def test_the_console_names_the_bound_each_model_trains(trained):
    iwae = trained("iwae").stderr
    assert "train IWAE bound (K=5)" in iwae and "train ELBO" in iwae
    gmm = trained("gmm").stderr
    assert "train log p(x)" in gmm and "log-density of continuous x" in gmm
    assert "ELBO" not in gmm
    assert "train ELBO" in trained("vae").stderr


def test_subsets_are_random_draws_across_the_split(trained, capsys):
    rows = _setup.subset(10_000, 100, 0)
    # binarized MNIST's test split is ordered by class: the first 100 are all zeros
    assert rows.shape == (100,) and len(set(rows)) == 100 and rows.max() > 5_000
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(_setup.subset(10, None, 0), np.arange(10))
    shown = _figures.example_rows(10_000, 0)[:_figures.RECONSTRUCTED]  # reconstructed
    assert len(set(shown // 1_000)) > 3  # from across a class-ordered split, not its start
    out = trained("gmm").path  # exact log p(x): the subset alone decides the number
    code, stdout, err = _run(["evaluate", out, "--num-examples", "40", "--seed", "3"], capsys)
    assert code == 0, err
    run = runs.load(out)
    chosen = run.setup.dataset.test[_setup.subset(run.setup.dataset.test.shape[0], 40, 3)]
    from jlvm.models import gmm

    exact = jax.vmap(gmm.log_marginal, in_axes=(None, 0))(run.state.params, chosen)
    np.testing.assert_allclose(json.loads(stdout)["log_likelihood"], float(np.mean(exact)),
                               atol=1e-3)
    # the clustering against the same rows' labels, as scikit-learn scores it
    from sklearn.metrics import adjusted_rand_score

    labels = run.setup.dataset.test_labels[_setup.subset(run.setup.dataset.test.shape[0], 40,
                                                         3)]
    components = jax.vmap(lambda x: gmm.posterior(run.state.params, x).logits)(chosen)
    np.testing.assert_allclose(json.loads(stdout)["adjusted_rand_index"], adjusted_rand_score(
        labels, np.asarray(components).argmax(axis=1)), atol=1e-4)


def test_progress_line_averages_seeds():
    line = _training.progress_line((("elbo", "ELBO"),),
                                   [{"train_elbo": -2.0}, {"train_elbo": -4.0}],
                                   "probability")
    assert line == ("train ELBO -3.000 (mean of 2 seeds, -4.000 to -2.000) nats per example")


def test_a_checkpoint_that_does_not_fit_config_json_is_named(trained, tmp_path, capsys):
    """An edited config.json is not checkpoint damage: one line that says so, and no
    falling back to an older checkpoint of the same wrong shape."""
    out = trained("vae").copy(tmp_path / "run")
    config = out / "config.json"
    config.write_text(config.read_text().replace('"latent_dim": 2', '"latent_dim": 3'))
    for argv in (["evaluate", out], ["sample", out, "--out", tmp_path / "s.png"],
                 ["train", "--resume", "--epochs", "3", "--out", out]):
        code, _, err = _run(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "does not fit this run's settings" in err and "is (2," in err, err


def test_resume_never_destroys_what_it_cannot_replace(trained, tmp_path, capsys):
    out = trained("vae").copy(tmp_path / "run")
    metrics = (out / "metrics.jsonl").read_text()
    import shutil

    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").write_text("x")  # a file where the folder was
    code, _, err = _run(["train", "--resume", "--epochs", "3", "--out", out], capsys)
    assert code == 2 and "is not a folder" in err
    assert (out / "metrics.jsonl").read_text() == metrics
    (out / "checkpoints").unlink()  # what kill -9 before the first checkpoint leaves
    code, _, err = _run(["train", "--epochs", "2", "--out", out, *TINY], capsys)
    assert code == 2 and "never reached a checkpoint" in err and "--resume" in err, err
    # --resume starts it again with its stored settings, and says so
    code, _, err = _run(["train", "--resume", "--epochs", "2", "--out", out], capsys)
    assert code == 0 and "no checkpoint to continue from" in err, err
    assert [r["epoch"] for r in _records(out)] == [1, 2]


def test_settings_are_plain_numbers_and_never_booleans(tmp_path):
    config = runs.make_config(epochs=np.int64(1), learning_rate=np.float32(1e-3),
                              latent_dim=2, hidden_dims=[np.int32(16)])
    assert type(config.epochs) is int and type(config.learning_rate) is float
    assert config.hidden_dims == (16,)
    result = runs.train(config, tmp_path / "numpy")  # config.json is plain JSON
    assert result["epochs"] == 1
    for name in ("learning_rate", "reg_covar", "epochs"):
        with pytest.raises(runs.RunError, match=f"{_config.option(name)} must be a number"):
            runs.make_config(**{name: True, **({"model": "gmm"} if name == "reg_covar" else {})})
    with pytest.raises(runs.RunError, match=r"config must be a jlvm\.runs\.Config"):
        runs.train("config", tmp_path / "x")
    with pytest.raises(runs.RunError, match=r"dataset must be a jlvm\.data\.Dataset"):
        runs.train(config, tmp_path / "y", dataset="digits")
    for devices in (1.9, True):
        with pytest.raises(runs.RunError, match="--devices must be a whole number"):
            runs.train(config, tmp_path / "z", devices=devices)


def test_resume_says_which_epochs_it_trains_again(trained, tmp_path, capsys):
    """A checkpoint the process never completed (killed while orbax wrote it) is no
    checkpoint: --resume continues from the one before and says so, on one line."""
    out = trained("vae").copy(tmp_path / "run")
    (out / "checkpoints" / "2").rename(out / "checkpoints" / "2.orbax-checkpoint-tmp-1")
    code, _, err = _run(["train", "--resume", "--epochs", "3", "--out", out], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("jlvm: warning")]
    assert len(warnings) == 1 and "records epoch 2, but the newest complete checkpoint is 1" \
        in warnings[0] and "epochs 2..2 are trained again" in warnings[0], err
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3]


def test_binary_latents_train_with_disarm_and_evaluate_exactly_from_the_command(
        tmp_path, capsys):
    out = tmp_path / "binary"
    code, _, err = _run(["train", "--model", "vae", "--prior", "bernoulli", "--posterior",
                         "bernoulli", "--latent-dim", "6", "--hidden-dims", "16",
                         "--epochs", "2", "--out", out], capsys)
    assert code == 0, err
    stored = json.loads((out / "config.json").read_text())["config"]
    assert (stored["grad_estimator"], stored["num_samples"]) == ("disarm", 2)
    named = runs.make_config(model="vae", prior="bernoulli", posterior="bernoulli",
                             grad_estimator="disarm")
    assert named.num_samples == 2  # DisARM's one pair, also when it is named
    vimco = runs.make_config(model="iwae", prior="bernoulli", posterior="bernoulli")
    assert (vimco.grad_estimator, vimco.num_samples) == ("score_function", 5)
    code, text, err = _run(["evaluate", out, "--exact", "--num-examples", "40"], capsys)
    assert code == 0, err
    exact = json.loads(text)
    assert exact["method"] == "exact" and exact["num_values_of_z"] == 64
    code, text, err = _run(["evaluate", out, "--num-examples", "40", "--num-samples",
                            "2000"], capsys)
    assert code == 0, err
    sampled = json.loads(text)  # the same 40 examples: IS with the encoder is close
    assert abs(sampled["log_likelihood"] - exact["log_likelihood"]) < 0.5, (sampled, exact)
    for argv, message in (
            (["--prior", "bernoulli"], "go together"),
            (["--prior", "bernoulli", "--posterior", "bernoulli", "--grad-estimator",
              "reparam"], "with binary z"),
            (["--grad-estimator", "disarm"], "with a continuous z"),
            (["--prior", "bernoulli", "--posterior", "bernoulli", "--num-samples", "3"],
             "must be even"),
            (["--model", "semi", "--prior", "bernoulli", "--posterior", "bernoulli"],
             "does not take")):
        code, _, err = _run(["train", "--model", "vae", *argv, "--out", tmp_path / "x"],
                            capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = _run(["train", "--model", "vae", "--epochs", "1", *TINY, "--out",
                         tmp_path / "gauss"], capsys)
    code, _, err = _run(["evaluate", tmp_path / "gauss", "--exact"], capsys)
    assert code == 2 and "--exact sums over every z" in err, err
