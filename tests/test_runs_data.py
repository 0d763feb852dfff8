"""jlvm.runs._data: data files of your own (.npz, .npy, .csv) and a dataset given from
Python; their splits, their units, and what is refused."""

import dataclasses
import json
import math

import numpy as np
import pytest

from jlvm import cli, data, runs
from jlvm.runs import _data


def _config(path, **settings):
    return runs.make_config(data=str(path), **settings)


def _real(rng, rows=50):
    return rng.normal(size=(rows, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -2.0]


def test_each_format_gives_the_same_splits_and_units(tmp_path):
    rng = np.random.default_rng(0)
    X = _real(rng)
    X[3, 1] = np.nan  # missing
    labels = rng.integers(0, 3, 50)
    np.savez(tmp_path / "x.npz", x=X, labels=labels)
    np.save(tmp_path / "x.npy", X)
    text = "\n".join(["p,q,r"] + [",".join("" if np.isnan(v) else repr(float(v)) for v in row)
                                  for row in X])
    (tmp_path / "x.csv").write_text(text + "\n")
    (tmp_path / "bare.csv").write_text(text.split("\n", 1)[1].replace(",,", ",NaN,") + "\n")
    loaded = {name: _data.load(_config(tmp_path / name, seed=4))
              for name in ("x.npz", "x.npy", "x.csv", "bare.csv")}
    first = loaded["x.npz"]
    test_rows = np.asarray(first.facts["test_rows"])
    # round(0.1 N) rows chosen with the seed, in that order; the others in file order
    assert test_rows.shape == (5,) and len(set(test_rows)) == 5
    train_rows = np.setdiff1d(np.arange(50), test_rows)
    train = X[train_rows]
    mean, scale = np.nanmean(train, 0), np.nanstd(train, 0)  # over observed entries
    np.testing.assert_allclose(first.units.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(first.units.scale, scale, rtol=1e-12)
    np.testing.assert_allclose(first.dataset.test, ((X[test_rows] - mean) / scale), rtol=1e-6)
    np.testing.assert_allclose(first.dataset.train, (train - mean) / scale, rtol=1e-6)
    assert np.isnan(first.dataset.train).sum() == 1  # the hole stays a hole
    np.testing.assert_array_equal(first.dataset.test_labels, labels[test_rows])
    np.testing.assert_array_equal(first.dataset.train_labels, labels[train_rows])
    assert first.levels is None and not first.dataset.binary
    for name, other in loaded.items():
        np.testing.assert_array_equal(other.facts["test_rows"], test_rows, err_msg=name)
        np.testing.assert_allclose(other.dataset.train, first.dataset.train, rtol=1e-6)
    assert loaded["x.npy"].dataset.test_labels is None
    # another seed holds out other rows
    assert _data.load(_config(tmp_path / "x.npy", seed=5)).facts["test_rows"] != list(
        test_rows)


def test_given_splits_binary_data_and_constant_columns(tmp_path):
    rng = np.random.default_rng(1)
    binary = (rng.random((40, 6)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "b.npz", train=binary[:30], valid=binary[30:35], test=binary[35:],
             train_labels=np.arange(30), test_labels=np.arange(5))
    loaded = _data.load(_config(tmp_path / "b.npz"))
    assert loaded.units is None and loaded.levels == 2  # 0/1: modelled as it is
    np.testing.assert_array_equal(loaded.dataset.train, binary[:30])
    np.testing.assert_array_equal(loaded.dataset.valid, binary[30:35])
    assert "test_rows" not in loaded.facts
    constant = _real(rng)
    constant[:, 0] = 7.0
    np.save(tmp_path / "c.npy", constant)
    units = _data.load(_config(tmp_path / "c.npy")).units
    assert units.scale[0] == 1.0 and units.mean[0] == 7.0  # centred, not divided by 0
    # binary data takes a Bernoulli likelihood; real data a Gaussian
    assert runs.make_config(data=str(tmp_path / "b.npz")).likelihood is None  # file unread
    from jlvm.runs import _setup

    setup = _setup.build(runs.make_config(data=str(tmp_path / "b.npz"), batch_size=10))
    assert setup.config.likelihood == "bernoulli"
    setup = _setup.build(runs.make_config(data=str(tmp_path / "c.npy"), batch_size=10))
    assert setup.config.likelihood == "gaussian"


@pytest.mark.parametrize("name, content, message", [
    ("a.csv", "1,2\n3,x\n", "line 2, column 2 of"),
    ("b.csv", "1,2\n3\n", "line 2 of"),
    ("c.csv", "", "holds no rows of numbers"),
    ("d.csv", "1,inf\n" * 10, "infinite value"),
    ("e.npy", np.zeros(5), "must have shape [N, D]"),
    ("f.npy", np.array([["a", "b"]]), "must hold numbers"),
    ("g.npz", {"train": np.zeros((9, 2)), "tset": np.zeros((2, 2))}, "it holds train, tset"),
    ("h.npz", {"x": np.zeros((9, 2)), "train": np.zeros((9, 2))}, "give either x"),
    ("i.npz", "not an archive", "not a readable .npz archive"),
    ("j.npz", np.zeros((9, 2)), "is a .npy file"),
    ("k.npy", {"x": np.zeros((9, 2))}, "is a .npz archive"),
    ("l.npz", {"train": np.zeros((9, 2)), "test": np.zeros((2, 3))}, "test in"),
    ("m.npy", np.zeros((5, 2)), "has 5 rows and no test split"),
    ("n.npz", {"x": np.zeros((9, 2)), "labels": np.zeros(8)}, "must have shape [N]"),
    ("o.npy", np.column_stack([np.full(20, np.nan), np.arange(20.0)]), "holds no value"),
    ("q.npy", np.full((20, 2), np.nan), "observe nothing under the NaN entries of q.npy"),
    ("p.txt", "1,2\n", "--data must be one of"),
])
def test_what_a_data_file_cannot_be_is_one_line(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        with open(path, "wb") as handle:
            np.savez(handle, **content)
    else:
        with open(path, "wb") as handle:
            np.save(handle, content)
    code = cli.main(["train", "--data", str(path), "--epochs", "1", "--out",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_run_on_a_file_reports_and_writes_in_the_files_units(tmp_path, capsys):
    """A VAE on a CSV with holes: every number in the file's units, the holes learned as
    incomplete data, the test split recorded and used by evaluate (--split train too)."""
    rng = np.random.default_rng(2)
    X = _real(rng, 120) * 1000.0
    X[rng.random(X.shape) < 0.1] = np.nan
    (tmp_path / "m.csv").write_text("\n".join(
        ",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X) + "\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "m.csv"), "--epochs", "2", "--latent-dim",
                     "1", "--hidden-dims", "8", "--batch-size", "50", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    stored = json.loads((out / "config.json").read_text())
    assert stored["config"]["likelihood"] == "gaussian" and stored["facts"]["train_mask"]
    scale = np.asarray(stored["facts"]["data"]["scale"])
    run = runs.load(out)
    assert run.setup.data.train_mask is not None  # NaN = missing, learned as such
    # the bound of the standardized rows minus the sum of log std over observed entries:
    # in thousands, far below what the standardized rows have
    mask = np.asarray(run.setup.data.train_mask)
    shift = float(np.mean(mask @ np.log(scale)))
    assert shift > 15
    import jax

    from jlvm.runs import _evaluation

    rows = np.arange(mask.shape[0])
    key = jax.random.PRNGKey(0)
    in_model_units = run.setup.built.bounds(run.state, run.setup.data.train_x, mask, key,
                                            rows)["elbo"]
    record = _evaluation.train_bounds(run.setup, run.state, rows, "train", key)
    np.testing.assert_allclose(record["train_elbo"],
                               float(np.mean(in_model_units)) - shift, rtol=1e-5)
    assert result["train_elbo"] < -shift + 10
    for split in ("test",):
        assert cli.main(["evaluate", str(out), "--num-samples", "20", "--split", split]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["num_examples"] == (12 if split == "test" else 108)
        assert line["likelihood_type"] == "density" and line["log_likelihood"] < -shift + 10


def test_a_dataset_from_python_is_kept_in_the_run_directory(tmp_path):
    """runs.train(dataset=...) keeps the data (data.npz): resume and evaluate read it there,
    never the bundled set that config.data named."""
    digits = data.digits()
    small = digits._replace(train=digits.train[:300], test=digits.test[:50],
                            train_labels=digits.train_labels[:300],
                            test_labels=digits.test_labels[:50])
    config = runs.make_config(epochs=1, latent_dim=2, hidden_dims=(8,))
    out = tmp_path / "run"
    runs.train(config, out, dataset=small)
    stored = json.loads((out / "config.json").read_text())
    assert stored["config"]["data"] == "data.npz" and (out / "data.npz").is_file()
    assert stored["config"]["image_shape"] == [8, 8]
    assert stored["facts"]["steps_per_epoch"] == 3  # 300 examples, not the digits' 1438
    moved = tmp_path / "moved"
    (out).rename(moved)  # a run directory moves with its data
    (line,) = runs.evaluate(moved, num_samples=5)
    assert line["num_examples"] == 50
    assert runs.resume(moved, epochs=2)["epochs"] == 2
    assert runs.load(moved).setup.facts["steps_per_epoch"] == 3
    # the digits' Bernoulli default is not kept for real-valued data: its own is found
    config = runs._in_memory(runs.make_config(epochs=1), data.blobs())
    assert config.likelihood is None and config.data == "data.npz"
    assert runs._in_memory(runs.make_config(likelihood="gaussian"),
                           data.blobs()).likelihood == "gaussian"  # a given one is kept


def test_units_convert_both_ways():
    units = _data.Units(np.array([1.0, -2.0]), np.array([2.0, 0.5]))
    x = np.array([[3.0, -1.0], [1.0, -2.0]])
    np.testing.assert_allclose(units.to_file(units.to_model(x)), x, rtol=1e-6)
    np.testing.assert_allclose(units.log_scale(None, 2), [math.log(2) + math.log(0.5)] * 2)
    np.testing.assert_allclose(units.log_scale(np.array([[True, False], [False, True]]), 2),
                               [math.log(2), math.log(0.5)])
    assert dataclasses.is_dataclass(runs.Config)
