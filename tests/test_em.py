"""jlvm.inference.em: EM as a Learner equals the core GMM's fit_em."""

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import data
from jlvm.inference import em
from jlvm.models import gmm


def test_em_learner_matches_fit_em():
    X = jnp.asarray(data.digits(binarize=False).train)
    learner = em(5, reg_covar=1e-2)
    state = learner.init(jax.random.PRNGKey(0), X)
    start = state.params
    step = jax.jit(learner.step)
    trace = []
    for _ in range(20):
        state, metrics = step(state, X)
        trace.append(float(metrics["log_likelihood"]))
    params, expected = gmm.fit_em(start, X, 20, reg_covar=1e-2)
    np.testing.assert_allclose(trace, expected, rtol=1e-5)
    for a, b in zip(state.params, params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # init is gmm.init_from_data with the learner's split of the key
    np.testing.assert_array_equal(
        start.means, gmm.init_from_data(jax.random.split(jax.random.PRNGKey(0))[0], X, 5,
                                        reg_covar=1e-2).means)
