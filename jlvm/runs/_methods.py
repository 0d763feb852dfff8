"""``jlvm evaluate``'s methods for one seed's parameters: importance sampling (the default;
exact for the mixtures), ``exact`` (a sum over every z of a finite prior), ``ais`` and
``bdmc`` — each a dict of figures for the run's metrics line."""

from __future__ import annotations

from typing import Any

from jlvm.runs import _ais, _evaluation
from jlvm.runs._setup import Setup

METHODS = ("is", "ais", "bdmc", "exact")


def evaluate_state(setup: Setup, state, X, labels, key, *, method: str, num_samples: int,
                   chunk_size: int | None, batch_size: int, num_examples: int | None,
                   ais_steps: int, num_chains: int, missing: str, mesh,
                   seed: int) -> dict[str, Any]:
    """The figures of ``method`` for the rows ``X`` (their ``labels`` or None) under one
    seed's ``state``; ``bdmc`` simulates its own ``num_examples`` points instead."""
    if method == "bdmc":
        return _ais.bdmc(setup, state, key, num_examples=num_examples or 100,
                         num_steps=ais_steps, num_chains=num_chains, batch_size=batch_size)
    if method == "exact" and not setup.built.exact:
        return _evaluation.evaluate_exact(setup, state, X, batch_size=batch_size,
                                          missing=missing, mesh=mesh, seed=seed)
    if method == "ais":
        return _ais.evaluate_ais(setup, state, X, key, num_steps=ais_steps,
                                 num_chains=num_chains, batch_size=batch_size,
                                 missing=missing, mesh=mesh, seed=seed)
    # "is", and "exact" where the kind's default is already exact (the mixtures)
    return _evaluation.evaluate_split(
        setup, state, X, key, num_samples=num_samples,
        chunk_size=None if chunk_size is None else min(chunk_size, num_samples),
        batch_size=batch_size, missing=missing, mesh=mesh, seed=seed, labels=labels)
