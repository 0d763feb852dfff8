"""jlvm.train: pure steps, compiled epochs, shuffling, the NaN guard."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlvm
from jlvm import data, train
from jlvm.inference import amortized
from jlvm.models import vae


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(data.digits().train)


@pytest.fixture(scope="module")
def learner():
    return amortized(vae.model(64, 3, hidden_dims=(32,)), optax.adam(1e-3))


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


def _a_model_that_convolves():
    """A user's jlvm.Model whose encoder calls lax.conv on the 8x8 digit (jlvm's own conv
    nets are matrix products, see jlvm.models.networks._conv)."""
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"kernel": 0.3 * jax.random.normal(k1, (3, 3, 1, 4)),
                "out": 0.1 * jax.random.normal(k2, (64, 4)), "w": jnp.zeros((2, 64))}

    def encoder(params, x, mask=None):
        h = jax.lax.conv_general_dilated(x.reshape(1, 8, 8, 1), params["kernel"], (2, 2),
                                         "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        mean, log_scale = jnp.split(jnp.tanh(h.reshape(-1)) @ params["out"], 2)
        return distrax.MultivariateNormalDiag(mean, jnp.exp(log_scale))

    def log_joint(params, x, z, mask=None):
        logits = z @ params["w"]
        return (jnp.sum(jax.scipy.stats.norm.logpdf(z))
                + jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits)))

    return jlvm.Model(init, log_joint, encoder)


def test_a_convolutional_step_runs_once_per_batch_on_cpu_with_the_same_numbers(digits):
    # XLA's CPU backend convolves slowly inside lax.scan (jax-ml/jax#12868): the epoch calls
    # the compiled step of a model that convolves batch after batch instead; an MLP's, and
    # jlvm's conv nets (matrix products), stay scanned
    conv = amortized(_a_model_that_convolves(), optax.adam(1e-3))
    state = conv.init(jax.random.PRNGKey(0), digits[:100])
    order = jnp.arange(200).reshape(2, 100)
    ours = amortized(vae.model(64, 2, hidden_dims=(4,), architecture="conv",
                               image_shape=(8, 8)), optax.adam(1e-3))

    def step_of(learner):
        return lambda state, data, rows: learner.step(state, data[rows])

    assert train._slow_in_a_loop(step_of(conv), state, digits, order[0])
    assert not train._slow_in_a_loop(step_of(ours), ours.init(jax.random.PRNGKey(0),
                                                              digits[:100]), digits, order[0])
    updates = []
    epoch = train.make_epoch(conv, 100, chunk_steps=4, progress=updates.append)
    trained, metrics = epoch(state, digits[:1000])
    assert metrics["loss"].shape == (10,) and updates == [4, 4, 2]
    assert np.all(np.isfinite(metrics["loss"]))
    # the scanned program it replaces gives the same parameters
    key, shuffle_key = jax.random.split(state.key)
    batches = train.shuffled_batches(shuffle_key, digits[:1000], 100)
    scanned, _ = jax.jit(lambda s, b: jax.lax.scan(conv.step, s, b))(state._replace(key=key),
                                                                      batches)
    for x, y in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(scanned),
                    strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)
    assert not np.allclose(trained.params["kernel"], state.params["kernel"])


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


def test_many_seeds_at_once_equal_the_runs_one_by_one(learner, digits):
    seeds = (0, 3, 7)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    stacked = jax.vmap(learner.init, in_axes=(0, None))(keys, digits[:100])
    epoch = train.make_epoch(learner, 100, chunk_steps=4, num_seeds=len(seeds))
    for _ in range(2):
        stacked, metrics = epoch(stacked, digits)
    steps = digits.shape[0] // 100
    assert metrics["elbo"].shape == (steps, len(seeds))
    single = train.make_epoch(learner, 100, chunk_steps=4)
    for index, seed in enumerate(seeds):
        state = learner.init(jax.random.PRNGKey(seed), digits[:100])
        for _ in range(2):
            state, alone = single(state, digits)
        np.testing.assert_allclose(np.asarray(metrics["elbo"][:, index]),
                                   np.asarray(alone["elbo"]), rtol=1e-5)
        for x, y in zip(jax.tree_util.tree_leaves(state),
                        jax.tree_util.tree_leaves(jax.tree_util.tree_map(
                            lambda a: a[index], stacked)), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    # the runs differ from each other: their own keys, their own shuffles
    assert not np.allclose(np.asarray(metrics["elbo"][:, 0]), np.asarray(metrics["elbo"][:, 1]))


def test_num_seeds_must_match_the_state(learner, digits):
    state = learner.init(jax.random.PRNGKey(0), digits[:100])
    with pytest.raises(ValueError, match="num_seeds=2"):
        train.make_epoch(learner, 100, num_seeds=2)(state, digits)
    with pytest.raises(ValueError, match="num_seeds"):
        train.make_epoch(learner, 100, num_seeds=0)


def test_data_mesh_checks_its_arguments():
    mesh = train.data_mesh(1)
    assert mesh.axis_names == (train.DATA_AXIS,) and mesh.devices.size == 1
    with pytest.raises(ValueError, match="num_devices"):
        train.data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="num_devices"):
        train.data_mesh(0)
    assert train.data_mesh(devices=jax.devices()[1:3]).devices.size == 2
    for devices in ([], ["cpu"], None):
        with pytest.raises(ValueError, match=r"devices must be one or more JAX devices|not both"):
            train.data_mesh(1 if devices is None else None,
                            devices=jax.devices()[:1] if devices is None else devices)
    assert train.data_mesh(np.int64(2)).devices.size == 2  # NumPy integers are integers
    with pytest.raises(ValueError, match="axis named 'data'"):
        train.make_epoch(None, 100, mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]),
                                                             ("batch",)))


def _data_parallel_run(learner, X, devices, num_seeds, seen):
    from jlvm import evaluate

    def step(state, batch):  # records how each batch is laid out, when the step is compiled
        jax.debug.inspect_array_sharding(
            batch, callback=lambda s: seen.append(len(s.device_set) if s.is_fully_replicated
                                                  else -len(s.device_set)))
        return learner.step(state, batch)

    mesh = train.data_mesh(devices)
    # 7 steps per chunk: the epoch's 14 steps in two calls of one compiled program
    epoch = train.make_epoch(train.Learner(learner.init, step), 100, chunk_steps=7, mesh=mesh,
                             num_seeds=num_seeds)
    if num_seeds:
        keys = jnp.stack([jax.random.PRNGKey(s) for s in range(num_seeds)])
        state = jax.vmap(learner.init, in_axes=(0, None))(keys, X[:100])
    else:
        state = learner.init(jax.random.PRNGKey(0), X[:100])
    for _ in range(2):
        state, metrics = epoch(state, X)
    params = (jax.tree_util.tree_map(lambda a: a[0], state.params) if num_seeds
              else state.params)
    log_px = evaluate.vae_log_likelihood(jax.random.PRNGKey(5), params, X[:200], 100,
                                         batch_size=100, chunk_size=50, mesh=mesh)
    devices_of_params = {len(leaf.sharding.device_set)
                         for leaf in jax.tree_util.tree_leaves(state.params)}
    return state, np.asarray(metrics["elbo"]), np.asarray(log_px), devices_of_params


@pytest.mark.parametrize("num_seeds", [None, 2])
def test_data_parallel_on_four_devices_equals_one_device(learner, digits, num_seeds):
    """Four simulated CPU devices (conftest's host-platform device count) against one:
    batches are split four ways, parameters replicated, and the numbers agree to float
    rounding (the only difference is the order in which the gradient's sum is added up)."""
    assert jax.device_count() == 4, jax.devices()
    seen_one, seen_four = [], []
    one, elbo_one, ll_one, _ = _data_parallel_run(learner, digits, 1, num_seeds, seen_one)
    four, elbo_four, ll_four, params_on = _data_parallel_run(learner, digits, 4, num_seeds,
                                                             seen_four)
    assert int(np.max(four.step)) == 2 * (digits.shape[0] // 100)
    # one device: the batch is whole; four: the batch is split, never replicated
    assert sorted(set(seen_one)) == [1] and sorted(set(seen_four)) == [-4]
    assert params_on == {4}
    for a, b in zip(jax.tree_util.tree_leaves(four.params),
                    jax.tree_util.tree_leaves(one.params), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.max(np.abs(a - b) / (1e-3 + np.abs(b))) < 1e-4
    assert np.max(np.abs(elbo_four - elbo_one)) < 1e-3
    assert np.max(np.abs(ll_four - ll_one)) < 1e-3


def test_epochs_check_what_they_are_given(learner, digits):
    with pytest.raises(TypeError, match="progress must be a function"):
        train.make_epoch(learner, 100, progress="x")
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        train.make_epoch(learner, 100, mesh="x")
    with pytest.raises(TypeError, match=r"learner must be a jlvm\.train\.Learner"):
        train.make_epoch("learner", 100)
    epoch = train.make_epoch(learner, 10)
    state = learner.init(jax.random.PRNGKey(0), digits[:10])
    with pytest.raises(ValueError, match="same number of rows"):
        epoch(state, (digits[:40], digits[:20]))
    with pytest.raises(ValueError, match="data must be an array"):
        epoch(state, [])
    stacked = jax.vmap(learner.init, in_axes=(0, None))(
        jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]), digits[:10])
    with pytest.raises(ValueError, match="pass num_seeds"):
        epoch(stacked, digits[:40])
    with pytest.raises(ValueError, match="hold no steps"):
        train.summarize({"elbo": []})
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        train.shuffled_batches(0, digits, 10)
