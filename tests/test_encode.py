"""jlvm encode (jlvm.runs._encode): features through p(z | x) written to a .npz, checked
against the trained model's own encoder and posterior."""

import json

import jax
import numpy as np

from jlvm import _checks, cli, data, runs
from jlvm.models import gmm, vae


def _run(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_means_it_writes_are_the_encoders_means(trained, tmp_path, capsys):
    out = trained("vae").path
    code, stdout, err = _run(["encode", out, "--out", tmp_path / "z.npz"], capsys)
    assert code == 0, err
    printed = json.loads(stdout)
    run = runs.load(out)
    X = run.setup.dataset.test
    with np.load(tmp_path / "z.npz") as written:
        assert printed["arrays"]["mean"] == [X.shape[0], run.config.latent_dim]
        assert "exact" in printed["what"]
        means = jax.vmap(lambda x: vae.encoder(run.state.params, x).mean())(X)
        scales = jax.vmap(lambda x: vae.encoder(run.state.params, x).stddev())(X)
        np.testing.assert_allclose(written["mean"], means, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(written["scale"], scales, rtol=1e-5)
        np.testing.assert_array_equal(written["labels"], run.setup.dataset.test_labels)
        assert int(written["epoch"]) == run.step
    # a file of the user's: NaN marks missing entries, which the encoder sees as 0
    x = np.array(X[:3])
    x[0, :32] = np.nan
    np.savez(tmp_path / "in.npz", x=x)
    code, _, err = _run(["encode", out, "--input", tmp_path / "in.npz", "--out",
                         tmp_path / "w.npz"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "w.npz") as written:
        assert "labels" not in written.files
        mask = ~np.isnan(x[0])
        expected = vae.encoder(run.state.params, np.nan_to_num(x[0]), mask).mean()
        np.testing.assert_allclose(written["mean"][0], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(written["mean"][1:], means[1:3], rtol=1e-5, atol=1e-6)


def test_a_gmm_writes_its_responsibilities(trained, tmp_path, capsys):
    out = trained("gmm").path
    code, _, err = _run(["encode", out, "--split", "train", "--out", tmp_path / "r.npz"],
                        capsys)
    assert code == 0, err
    run = runs.load(out)
    with np.load(tmp_path / "r.npz") as written:
        expected = jax.vmap(lambda x: gmm.posterior(run.state.params, x).probs)(
            run.setup.dataset.train)
        np.testing.assert_allclose(written["responsibilities"], expected, rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_array_equal(written["component"], np.argmax(expected, axis=1))
        np.testing.assert_array_equal(written["labels"], run.setup.dataset.train_labels)


def test_what_cannot_be_encoded_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    out = trained("vae").path
    (tmp_path / "taken.npz").write_bytes(b"mine")
    x = np.zeros((2, 64), np.float32)
    x[1] = np.nan
    np.savez(tmp_path / "empty_row.npz", x=x)
    np.savez(tmp_path / "gray.npz", x=np.full((2, 64), 0.5, np.float32))
    np.savez(tmp_path / "wrong.npz", y=np.zeros((2, 64)))
    np.savez(tmp_path / "narrow.npz", x=np.zeros((2, 10)))
    cases = [
        (["--out", tmp_path / "taken.npz"], "exists"),
        (["--out", tmp_path / "z.txt"], "must end in .npz"),
        (["--out", tmp_path / "no" / "z.npz"], "does not exist"),
        (["--input", tmp_path / "empty_row.npz", "--out", tmp_path / "a.npz"], "all NaN"),
        (["--input", tmp_path / "gray.npz", "--out", tmp_path / "b.npz"], "0/1 values"),
        (["--input", tmp_path / "wrong.npz", "--out", tmp_path / "c.npz"], "named x"),
        (["--input", tmp_path / "narrow.npz", "--out", tmp_path / "d.npz"], "[N, 64]"),
        (["--input", tmp_path / "none.npz", "--out", tmp_path / "e.npz"], "does not exist"),
        (["--split", "test", "--input", tmp_path / "gray.npz", "--out", tmp_path / "f.npz"],
         "not allowed with"),
        (["--split", "valid", "--out", tmp_path / "g.npz"], "no valid split"),
        (["--num-samples", "0", "--out", tmp_path / "h.npz"], "--num-samples"),
    ]
    for argv, message in cases:
        code, stdout, err = _run(["encode", out, *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert stdout == ""
    assert (tmp_path / "taken.npz").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty_row.npz", "gray.npz", "narrow.npz", "taken.npz", "wrong.npz"]


def test_every_model_encodes_incomplete_rows(trained, tmp_path, capsys):
    """NaN = missing for every model: a GMM's responsibilities are p(k | x_obs), exactly."""
    X = np.array(data.digits().test[:5])
    X[:, :20] = np.nan
    np.savez(tmp_path / "holes.npz", x=X)
    out = trained("gmm").path
    code, _, err = _run(["encode", out, "--input", tmp_path / "holes.npz", "--out",
                         tmp_path / "r.npz"], capsys)
    assert code == 0, err
    params = runs.load(out).state.params
    expected = jax.vmap(lambda x, m: gmm.posterior(params, x, m).probs)(
        np.nan_to_num(X), ~np.isnan(X))
    np.testing.assert_allclose(np.load(tmp_path / "r.npz")["responsibilities"], expected,
                               rtol=1e-4, atol=1e-6)
    code, _, err = _run(["encode", trained("vae").path, "--input", tmp_path / "holes.npz",
                         "--out", tmp_path / "vae.npz"], capsys)
    assert code == 0, err
    assert np.all(np.isfinite(np.load(tmp_path / "vae.npz")["mean"]))


def test_a_flows_moments_are_monte_carlo_estimates_within_their_error(tmp_path):
    """A flow's E_q[z|x] has no closed form: the K-draw mean written lies within 4
    standard errors (scale / sqrt(K)) of a 50,000-draw reference."""
    config = runs.make_config(model="vae", epochs=1, latent_dim=2, hidden_dims=(16,),
                              posterior="flow")
    out = tmp_path / "flow"
    runs.train(config, out)
    info = runs.encode(out, tmp_path / "z.npz", num_samples=400, seed=1)
    assert "Monte Carlo over 400 draws" in info["what"]
    run = runs.load(out)
    X = run.setup.dataset.test[:5]
    with np.load(tmp_path / "z.npz") as written:
        mean, scale = written["mean"][:5], written["scale"][:5]
    draws = jax.vmap(lambda x: jax.vmap(lambda k: _checks.sample(
        vae.encoder(run.state.params, x), k, 1)[0])(jax.random.split(
            jax.random.PRNGKey(7), 50_000)))(X)
    reference = np.asarray(draws.mean(axis=1))
    np.testing.assert_array_less(np.abs(mean - reference), 4 * scale / np.sqrt(400) + 1e-6)
    # a standard deviation from K=400 draws has a relative standard error of about
    # 1/sqrt(2K) = 3.5%: 5 of them
    np.testing.assert_allclose(scale, np.asarray(draws.std(axis=1)), rtol=0.18)
