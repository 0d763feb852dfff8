"""Closed forms in float64 NumPy, independent of jlvm's JAX code: the tests' oracles."""

from __future__ import annotations

import numpy as np
from scipy import stats


def linear_gaussian_marginal(W, b, noise_std):
    W, b = np.asarray(W, np.float64), np.asarray(b, np.float64)
    cov = W @ W.T + float(noise_std) ** 2 * np.eye(W.shape[0])
    return stats.multivariate_normal(mean=b, cov=cov)


def linear_gaussian_posterior(W, b, noise_std, x):
    """Mean and covariance of p(z|x) by Bayes' rule for Gaussians (precision form)."""
    W, b, x = (np.asarray(a, np.float64) for a in (W, b, x))
    precision = np.eye(W.shape[1]) + W.T @ W / float(noise_std) ** 2
    cov = np.linalg.inv(precision)
    mean = cov @ W.T @ (x - b) / float(noise_std) ** 2
    return mean, cov


def linear_gaussian_elbo(W, b, noise_std, x, q_mean, q_cov):
    """ELBO(q) = E_q[log p(x, z)] + H(q) for q = N(q_mean, q_cov), in closed form."""
    W, b, x, m, S = (np.asarray(a, np.float64) for a in (W, b, x, q_mean, q_cov))
    D, L = W.shape
    s2 = float(noise_std) ** 2
    prior = -0.5 * L * np.log(2 * np.pi) - 0.5 * (m @ m + np.trace(S))
    r = x - W @ m - b
    likelihood = (-0.5 * D * np.log(2 * np.pi * s2)
                  - 0.5 / s2 * (r @ r + np.trace(W @ S @ W.T)))
    entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * S)[1]
    return prior + likelihood + entropy


def gaussian_kl(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1))."""
    m0, S0, m1, S1 = (np.asarray(a, np.float64) for a in (m0, S0, m1, S1))
    k = m0.shape[0]
    S1_inv = np.linalg.inv(S1)
    d = m1 - m0
    return 0.5 * (np.trace(S1_inv @ S0) + d @ S1_inv @ d - k
                  + np.linalg.slogdet(S1)[1] - np.linalg.slogdet(S0)[1])


def gmm_log_joint_table(logits, means, scale_tril, x):
    """log pi_k + log N(x; mu_k, L_k L_k^T) for every k, with SciPy."""
    logits = np.asarray(logits, np.float64)
    log_pi = logits - np.logaddexp.reduce(logits)
    return np.array([
        log_pi[k] + stats.multivariate_normal(
            mean=np.asarray(means[k], np.float64),
            cov=np.asarray(scale_tril[k], np.float64) @ np.asarray(scale_tril[k], np.float64).T,
        ).logpdf(np.asarray(x, np.float64))
        for k in range(logits.shape[0])
    ])


def mean_and_standard_error(values):
    values = np.asarray(values, np.float64)
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
