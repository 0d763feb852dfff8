"""jlvm.checkpoint: exact round trips, and torn saves never win."""

import pathlib

import jax
import numpy as np
import optax
import pytest

from jlvm import checkpoint
from jlvm.inference import amortized, em
from jlvm.models import vae


def _state():
    learner = amortized(vae.model(6, 2, hidden_dims=(4,)),
                        optax.adam(1e-3))
    state = learner.init(jax.random.PRNGKey(0), None)
    # compiled: an eager step compiles each of its operations on its own, seconds of work
    step = jax.jit(learner.step)
    new, _ = step(state, jax.numpy.ones((3, 6)))
    return step, state, new


def test_save_then_restore_round_trips_every_array_exactly(tmp_path):
    step, state, trained = _state()
    checkpoint.save(tmp_path / "ck", 7, trained)
    assert checkpoint.latest_step(tmp_path / "ck") == 7
    restored = checkpoint.restore(tmp_path / "ck", state)
    assert type(restored) is type(trained) and type(restored.params) is type(trained.params)
    leaves = zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(trained),
                 strict=True)
    for a, b in leaves:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the restored state steps exactly like the original
    np.testing.assert_array_equal(step(restored, jax.numpy.ones((3, 6)))[1]["loss"],
                                  step(trained, jax.numpy.ones((3, 6)))[1]["loss"])


def test_em_state_with_empty_optimizer_state_round_trips(tmp_path):
    X = jax.random.normal(jax.random.PRNGKey(0), (50, 2))
    state = em(2).init(jax.random.PRNGKey(1), X)
    checkpoint.save(tmp_path / "ck", 1, state)
    restored = checkpoint.restore(tmp_path / "ck", state)
    np.testing.assert_array_equal(restored.params.means, state.params.means)


def test_an_unfinished_save_is_ignored(tmp_path):
    _, state, trained = _state()
    checkpoint.save(tmp_path / "ck", 1, trained)
    # what a process killed mid-save leaves: orbax's temporary folder, never renamed
    torn = tmp_path / "ck" / "2.orbax-checkpoint-tmp-1234"
    torn.mkdir()
    (torn / "partial").write_bytes(b"\0" * 10)
    assert checkpoint.latest_step(tmp_path / "ck") == 1
    restored = checkpoint.restore(tmp_path / "ck", state)
    np.testing.assert_array_equal(np.asarray(restored.step), np.asarray(trained.step))


def test_missing_checkpoints():
    assert checkpoint.latest_step(pathlib.Path("/nonexistent/jlvm")) is None


def test_restore_without_checkpoint_raises(tmp_path):
    _, state, _ = _state()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.restore(tmp_path / "empty", state)


def test_steps_only_grow_and_a_mismatch_is_not_damage(tmp_path):
    _, state, trained = _state()
    checkpoint.save(tmp_path / "ck", 2, trained)
    for step in (2, 1):  # orbax would skip these without a word
        with pytest.raises(checkpoint.CheckpointError, match="steps only grow"):
            checkpoint.save(tmp_path / "ck", step, trained)
    with pytest.raises(ValueError, match="step must be an int"):
        checkpoint.save(tmp_path / "ck", "x", trained)
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint 7 .* \(it has 2\)"):
        checkpoint.restore(tmp_path / "ck", state, 7)
    other = amortized(vae.model(6, 3, hidden_dims=(4,)),
                      optax.adam(1e-3)).init(jax.random.PRNGKey(0), None)
    with pytest.raises(checkpoint.CheckpointMismatch, match="does not fit"):
        checkpoint.restore_intact(tmp_path / "ck", other)


_ONE_PROCESS_ASKS = """
import sys, jax, numpy as np
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
                           initialization_timeout=60)
from jlvm import checkpoint
folder = sys.argv[3]
checkpoint.save(folder, 1, {"w": np.arange(3.0)})  # every process takes part in a save
if jax.process_index() == 0:  # one process alone asks what is there
    print(checkpoint.steps(folder))
checkpoint.save(folder, 2, {"w": np.arange(3.0)})
print(checkpoint.steps(folder))
"""


def test_one_process_of_a_distributed_run_reads_the_steps_alone(tmp_path):
    """Listing checkpoints never waits for the other processes of a jax.distributed run:
    it did (orbax's barrier), and a run hung for 300 s where only the writer asked, or
    where one process saw the folder before the other."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "JAX_PLATFORMS": "cpu"}
    workers = [subprocess.Popen(
        [sys.executable, "-c", _ONE_PROCESS_ASKS, f"localhost:{port}", str(index),
         str(tmp_path / "ck")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for index in range(2)]
    try:
        outputs = [worker.communicate(timeout=90) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
    printed = [[line for line in stdout.splitlines() if not line.startswith("[Gloo]")]
               for stdout, _ in outputs]
    assert printed == [["[1]", "[1, 2]"], ["[1, 2]"]]


def test_an_array_of_another_dtype_is_refused_not_converted(tmp_path):
    """orbax converts to the template's dtype silently: 0.7 restored into an int32 leaf
    was 0."""
    saved = {"w": np.arange(3, dtype=np.float32) + 0.7, "step": np.array(3, np.int32)}
    checkpoint.save(tmp_path / "ck", np.int64(1), saved)  # a NumPy integer is an int
    like = {"w": np.zeros(3, np.int32), "step": np.array(0, np.int32)}
    for restore in (checkpoint.restore, checkpoint.restore_intact):
        with pytest.raises(checkpoint.CheckpointMismatch, match="w is float32 there and int32"):
            restore(tmp_path / "ck", like)
    restored = checkpoint.restore(tmp_path / "ck", {"w": np.zeros(3, np.float32),
                                                    "step": np.array(0, np.int32)})
    np.testing.assert_array_equal(restored["w"], saved["w"])
