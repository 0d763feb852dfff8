"""jlvm.train: pure steps, compiled epochs, shuffling, the NaN guard."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jlvm import data, train
from jlvm.inference import amortized
from jlvm.models import vae


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(data.digits().train)


@pytest.fixture(scope="module")
def learner():
    init = functools.partial(vae.init, data_dim=64, latent_dim=3, hidden_dims=(32,))
    return amortized(init, optax.adam(1e-3))


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


def test_step_is_pure_and_bitwise_reproducible_under_jit(learner, digits):
    state = learner.init(jax.random.PRNGKey(0), digits[:50])
    step = jax.jit(learner.step)
    first, m1 = step(state, digits[:50])
    second, m2 = step(state, digits[:50])
    assert _leaves_equal(first, second) and float(m1["loss"]) == float(m2["loss"])
    assert int(first.step) == 1 and not np.array_equal(first.key, state.key)
    # the input state was not changed
    assert int(state.step) == 0


def test_step_compiles_once_for_a_fixed_batch_shape(learner, digits):
    traces = []

    def counted(state, batch):
        traces.append(1)
        return learner.step(state, batch)

    step = jax.jit(counted)
    state = learner.init(jax.random.PRNGKey(0), digits[:50])
    for i in range(4):
        state, _ = step(state, digits[i * 50:(i + 1) * 50])
    assert len(traces) == 1


def test_epoch_runs_every_batch_and_reports_progress(learner, digits):
    updates = []
    epoch = train.make_epoch(learner, 100, chunk_steps=5, progress=updates.append)
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    state, metrics = epoch(state, digits)
    steps = digits.shape[0] // 100
    assert int(state.step) == steps and metrics["loss"].shape == (steps,)
    assert sum(updates) == steps and len(updates) == -(-steps // 5)
    # the same scanned epoch is the same as calling step batch after batch
    again = learner.init(jax.random.PRNGKey(0), digits[:100])
    again, batches = (lambda s: (s._replace(key=jax.random.split(s.key)[0]),
                                 train.shuffled_batches(jax.random.split(s.key)[1], digits,
                                                        100)))(again)
    for b in batches:
        again, _ = jax.jit(learner.step)(again, b)
    for x, y in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(again),
                    strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)


def test_vae_training_raises_the_elbo_on_digits(learner, digits):
    epoch = train.make_epoch(learner, 100)
    state = learner.init(jax.random.PRNGKey(1), digits[:100])
    state, first = epoch(state, digits)
    for _ in range(25):  # 14 steps an epoch: ~360 steps in all
        state, last = epoch(state, digits)
    assert np.mean(last["elbo"]) > np.mean(first["elbo"]) + 5.0


def test_shuffled_batches_partition_the_data():
    data_tree = (jnp.arange(10), jnp.arange(10.0)[:, None] * 2)
    index, x = train.shuffled_batches(jax.random.PRNGKey(0), data_tree, 3)
    assert index.shape == (3, 3) and x.shape == (3, 3, 1)
    assert len(set(np.asarray(index).ravel().tolist())) == 9  # no repeats
    np.testing.assert_array_equal(np.asarray(x)[..., 0], 2 * np.asarray(index))
    with pytest.raises(ValueError, match="batch_size"):
        train.num_batches(5, 6)


def test_non_finite_loss_never_reaches_the_parameters(learner, digits):
    state = learner.init(jax.random.PRNGKey(0), digits[:10])
    poisoned = digits[:10].at[0, 0].set(jnp.nan)
    new, metrics = jax.jit(learner.step)(state, poisoned)
    assert not bool(metrics["finite"])
    assert _leaves_equal(new.params, state.params) and _leaves_equal(new.opt_state,
                                                                     state.opt_state)
    assert int(new.step) == 1
