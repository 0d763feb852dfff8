"""jlvm.runs._missing: runs that learn from incomplete data (jlvm train --missing,
--missing-file, NaN in the data) and evaluate on incomplete test data."""

import json

import jax
import numpy as np
import pytest

from jlvm import cli, data, missing, runs
from jlvm.models import gmm
from jlvm.runs import _missing
from jlvm.runs._directory import RunDirectory


def _run(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_masks_are_what_their_spec_says():
    top = _missing.half_mask((4, 3), "top-half")
    assert top.tolist() == [False] * 6 + [True] * 6
    assert (~_missing.half_mask((4, 3), "bottom-half")).tolist() == top.tolist()
    mask = _missing.mask_for("mcar:0.3", (2000, 64), (8, 8), seed=5)
    # the missing share is P within 4 standard errors, and the seed decides the mask
    assert abs((~mask).mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / mask.size)
    np.testing.assert_array_equal(mask, _missing.mask_for("mcar:0.3", (2000, 64), None, 5))
    assert not np.array_equal(mask, _missing.mask_for("mcar:0.3", (2000, 64), None, 6))
    assert _missing.mask_for("none", (3, 2), None, 0) is None
    for bad in ("mcar:0", "mcar:1", "mcar:x", "random", "top"):
        with pytest.raises(runs.RunError, match="--missing must be none, top-half"):
            runs.make_config(missing=bad)


def test_a_run_learns_from_its_holes_and_keeps_them(tmp_path, capsys):
    """jlvm train --missing mcar:0.5: the mask drawn with the seed is stored in the run;
    the trained bound is the ELBO of the observed pixels; --resume continues on the same
    holes, and a run written from a mask file equals it."""
    out = tmp_path / "holes"
    code, stdout, err = _run(["train", "--missing", "mcar:0.5", "--epochs", "1",
                              "--latent-dim", "2", "--hidden-dims", "16", "--out", out], capsys)
    assert code == 0, err
    stored = RunDirectory(out).read_mask()
    X = data.digits().train
    np.testing.assert_array_equal(stored, _missing.mask_for("mcar:0.5", X.shape, (8, 8), 0))
    assert json.loads((out / "config.json").read_text())["config"]["missing"] == "mcar:0.5"
    run = runs.load(out)
    np.testing.assert_array_equal(np.asarray(run.setup.data.train_mask), stored)
    # the encoder sees x with its holes at 0 (not the mask: MIWAE's zero imputation), and
    # the run directory says so
    assert _facts(out)["model"]["encoder_sees_mask"] is False
    assert run.state.params.encoder_sees_mask is False
    # the bound it reports is of half the pixels: far above a complete image's
    assert json.loads(stdout)["train_elbo"] > -30
    code, _, err = _run(["train", "--resume", "--epochs", "2", "--out", out], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(RunDirectory(out).read_mask(), stored)
    np.savez(tmp_path / "mask.npz", mask=stored)
    again = tmp_path / "from-file"
    code, stdout_file, err = _run(["train", "--missing-file", tmp_path / "mask.npz",
                                   "--epochs", "1", "--latent-dim", "2", "--hidden-dims", "16",
                                   "--out", again], capsys)
    assert code == 0, err
    assert json.loads(stdout_file)["train_elbo"] == json.loads(stdout)["train_elbo"]


def _facts(out) -> dict:
    return json.loads((out / "config.json").read_text())["facts"]


def test_a_run_whose_encoder_took_the_mask_as_a_second_input_still_loads(tmp_path, capsys,
                                                                          monkeypatch):
    """Runs of jlvm 0.1 (config.json format 1, no facts) written before train_mask.npz said
    what the encoder takes had encoders with the mask as a second input per pixel: they
    evaluate and resume."""
    from jlvm.runs.kinds import vae as vae_kind

    model = vae_kind.model
    monkeypatch.setattr(vae_kind, "model", lambda config, data, stored: model(
        config, data, {**stored, "encoder_sees_mask": True}))
    out = tmp_path / "old"
    code, _, err = _run(["train", "--missing", "top-half", "--epochs", "1", "--latent-dim",
                         "2", "--hidden-dims", "16", "--out", out], capsys)
    assert code == 0, err
    monkeypatch.undo()
    # what jlvm 0.1 wrote: config.json format 1, the mask alone in train_mask.npz
    stored = json.loads((out / "config.json").read_text())
    config = stored["config"]
    config["hidden"] = config.pop("hidden_dims")
    for name in ("objective", "model_args", "image_shape"):
        del config[name]
    (out / "config.json").write_text(json.dumps({"format": 1, "config": config,
                                                 "data_dim": 64, "steps_per_epoch": 14}))
    np.savez_compressed(out / "train_mask.npz", mask=RunDirectory(out).read_mask())
    assert runs.load(out).state.params.encoder_sees_mask is True
    code, stdout, err = _run(["evaluate", out, "--num-samples", "20", "--num-examples", "50"],
                             capsys)
    assert code == 0 and np.isfinite(json.loads(stdout)["log_likelihood"]), err
    code, _, err = _run(["train", "--resume", "--epochs", "2", "--out", out], capsys)
    assert code == 0, err
    assert _facts(out)["model"]["encoder_sees_mask"] is True  # now in config.json
    assert runs.load(out).state.params.encoder_sees_mask is True
    # a damaged train_mask.npz: one line naming it, for evaluate and resume alike
    path = out / "train_mask.npz"
    path.write_bytes(path.read_bytes()[:100])
    for argv in (["evaluate", out, "--num-samples", "5"],
                 ["train", "--resume", "--epochs", "3", "--out", out]):
        code, stdout, err = _run(argv, capsys)
        assert code == 2 and "train_mask.npz is damaged" in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and stdout == "", err


def test_em_on_holes_and_the_exact_masked_test_likelihood(tmp_path, capsys):
    """A GMM run on incomplete data: its EM is gmm.fit_em with the run's mask; evaluate
    --missing mcar:P reports the exact log p(x_obs) of the test images with that mask."""
    out = tmp_path / "gmm"
    code, stdout, err = _run(["train", "--model", "gmm", "--data", "blobs", "--components", "3",
                              "--missing", "mcar:0.3", "--epochs", "5", "--out", out], capsys)
    assert code == 0, err
    assert "training examples observe nothing" in err  # 2-D points: some lose both entries
    run = runs.load(out)
    kept = run.setup.data.train_mask
    # the run's start: the learner's init with the run's seed, as jlvm train makes it
    initial = run.setup.learner.init(jax.random.PRNGKey(0), run.setup.train_data)
    expected, trace = gmm.fit_em(initial.params, run.setup.data.train_x, 5, mask=kept,
                                 reg_covar=run.config.reg_covar)
    for a, b in zip(run.state.params, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["train_log_likelihood_during_epoch"] for r in records],
                               trace, rtol=1e-5)
    code, stdout, err = _run(["evaluate", out, "--missing", "mcar:0.5", "--seed", "3"], capsys)
    assert code == 0, err
    line = json.loads(stdout)
    X = run.setup.dataset.test
    mask = _missing.mask_for("mcar:0.5", X.shape, None, 3)
    mask[~mask.any(axis=1), 0] = True
    exact = jax.vmap(gmm.log_marginal, in_axes=(None, 0, 0))(run.state.params, X, mask)
    assert line["missing"] == "mcar:0.5" and line["exact"]
    np.testing.assert_allclose(line["log_likelihood"], float(np.mean(exact)), atol=1e-3)


def test_what_cannot_be_used_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "short.npz", mask=np.ones((3, 64), bool))
    np.savez(tmp_path / "floats.npz", mask=np.full((1438, 64), 0.5))
    cases = [
        (["--missing", "top-half", "--data", "blobs"], "needs image data"),
        (["--missing", "mcar:0.2", "--missing-file", tmp_path / "short.npz"], "not both"),
        (["--missing-file", tmp_path / "short.npz"], "the training split's shape [1438, 64]"),
        (["--missing-file", tmp_path / "floats.npz"], "must be boolean"),
        (["--missing-file", tmp_path / "none.npz"], "does not exist"),
    ]
    for argv, message in cases:
        code, stdout, err = _run(["train", "--epochs", "1", "--latent-dim", "2", "--hidden-dims",
                                  "16", *argv, "--out", tmp_path / "run"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert stdout == "" and not (tmp_path / "run").exists()


def test_impute_fills_every_hole_with_the_models_conditional_mean(trained, tmp_path, capsys):
    """jlvm impute: the GMM's fill is its exact E[x_mis | x_obs]; a VAE's is
    missing.impute with its encoder (same key); observed entries are kept, every NaN is
    filled, --draws gives multiple imputations; a file without holes comes back as it was."""
    X = np.asarray(data.digits().test[:12])
    holes = X.copy()
    holes[:, :32] = np.nan
    holes[3, 40:] = np.nan
    np.savez(tmp_path / "in.npz", x=holes)
    gmm_run = trained("gmm").path
    code, stdout, err = _run(["impute", gmm_run, "--input", tmp_path / "in.npz", "--out",
                              tmp_path / "gmm.npz", "--draws", "3"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["what"] == "E[x_mis | x_obs], exact"
    params = runs.load(gmm_run).state.params
    observed = ~np.isnan(holes)
    with np.load(tmp_path / "gmm.npz") as written:
        exact = jax.vmap(gmm.conditional_mean, in_axes=(None, 0, 0))(
            params, np.nan_to_num(holes), observed)
        np.testing.assert_allclose(written["x"], exact, rtol=1e-5, atol=1e-6)
        assert written["draws"].shape == (3, 12, 64)
        np.testing.assert_array_equal(written["draws"][:, observed],
                                      np.broadcast_to(X[observed], (3, observed.sum())))
    vae_run = trained("vae").path
    code, stdout, err = _run(["impute", vae_run, "--input", tmp_path / "in.npz", "--out",
                              tmp_path / "vae.npz", "--num-samples", "64", "--seed", "2"],
                             capsys)
    assert code == 0, err
    run = runs.load(vae_run)
    keys = jax.random.split(jax.random.PRNGKey(2), 12)
    expected = jax.vmap(lambda k, x, m: missing.impute(
        k, run.setup.built.model, run.state.params, x, m, 64, chunk_size=64).mean)(
            keys, np.nan_to_num(holes), observed)
    with np.load(tmp_path / "vae.npz") as written:
        assert not np.isnan(written["x"]).any()
        np.testing.assert_array_equal(written["x"][observed], X[observed])
        np.testing.assert_allclose(written["x"], expected, rtol=1e-5, atol=1e-6)
        assert np.all((written["x"] >= 0) & (written["x"] <= 1))  # Bernoulli probabilities
        assert written["effective_sample_size"].shape == (12,)
    np.savez(tmp_path / "full.npz", x=X)
    code, _, err = _run(["impute", vae_run, "--input", tmp_path / "full.npz", "--out",
                         tmp_path / "same.npz"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "same.npz") as written:
        np.testing.assert_array_equal(written["x"], X)
    empty = holes.copy()
    empty[5] = np.nan
    np.savez(tmp_path / "empty.npz", x=empty)
    for argv, message in (
            (["--input", tmp_path / "empty.npz", "--out", tmp_path / "a.npz"], "row 5 of x is "
                                                                                "all NaN"),
            (["--input", tmp_path / "in.npz", "--out", tmp_path / "vae.npz"], "exists"),
            (["--input", tmp_path / "in.npz", "--out", tmp_path / "b.npz", "--draws", "-1"],
             "--draws must be")):
        code, stdout, err = _run(["impute", vae_run, *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_holes_are_never_lost_or_blamed_on_the_wrong_setting(tmp_path, capsys):
    """A run whose train_mask.npz was deleted is refused, not trained on other holes; data
    that observe nothing names where the holes came from."""
    out = tmp_path / "holes"
    np.savez(tmp_path / "mask.npz", mask=_missing.mask_for("mcar:0.3", (1438, 64), None, 1))
    code, _, err = _run(["train", "--missing-file", tmp_path / "mask.npz", "--epochs", "1",
                         "--latent-dim", "2", "--hidden-dims", "16", "--out", out], capsys)
    assert code == 0, err
    (out / "train_mask.npz").unlink()
    np.savez(tmp_path / "mask.npz", mask=np.ones((1438, 64), bool))  # the file changed too
    for argv in (["train", "--resume", "--epochs", "2", "--out", out],
                 ["evaluate", out, "--num-samples", "5"]):
        code, stdout, err = _run(argv, capsys)
        assert code == 2 and "train_mask.npz is missing" in err, err
        assert len(err.strip().splitlines()) == 1 and stdout == ""
    np.save(tmp_path / "nothing.npy", np.full((30, 4), np.nan))
    np.savez(tmp_path / "none.npz", mask=np.zeros((1438, 64), bool))
    for argv, source in ((["--data", tmp_path / "nothing.npy", "--batch-size", "5"],
                          "the NaN entries of nothing.npy"),
                         (["--missing-file", tmp_path / "none.npz"], "--missing-file")):
        code, _, err = _run(["train", "--epochs", "1", *argv, "--out", tmp_path / "x"], capsys)
        assert code == 2 and f"observe nothing under {source}" in err, err


def test_impute_keeps_a_float64_input_bit_for_bit(trained, tmp_path, capsys):
    X = np.asarray(data.digits().test[:6], np.float64)
    X[:, ::3] = np.nan
    np.savez(tmp_path / "in.npz", x=X)
    code, _, err = _run(["impute", trained("vae").path, "--input", tmp_path / "in.npz",
                         "--out", tmp_path / "out.npz", "--num-samples", "8"], capsys)
    assert code == 0, err
    written = np.load(tmp_path / "out.npz")["x"]
    assert written.dtype == np.float64 and not np.isnan(written).any()
    np.testing.assert_array_equal(written[~np.isnan(X)], X[~np.isnan(X)])
