"""The options of annealed importance sampling (``jlvm.ais``), checked before anything is
traced: the temperature schedules, step sizes, and the settings of an AIS over a data set
(hashable: a key of the compiled programs' cache)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jlvm import _checks

SCHEDULES = ("sigmoidal", "geometric")
SIGMOID_RADIUS = 4.0  # Grosse et al.'s sigmoidal schedule: sigmoid on [-4, 4], rescaled
GEOMETRIC_START = 1e-4  # the geometric schedule's b_1

def schedule(num_steps: int, kind: str = "sigmoidal") -> np.ndarray:
    """The temperatures b_0 = 0 < b_1 < ... < b_T = 1: [num_steps + 1] (float64).

    ``"sigmoidal"``: sigmoid(s) at num_steps + 1 points s evenly spaced in [-4, 4], rescaled
    to [0, 1] (Grosse et al., 2015): small steps at both ends, where the path changes
    fastest. ``"geometric"``: b_1..b_T evenly spaced in log b from 1e-4 to 1. One step
    (T = 1) is [0, 1] either way: importance sampling with ``initial`` as proposal.
    """
    num_steps = _checks.positive_int(num_steps, "num_steps")
    _checks.one_of(kind, "schedule", SCHEDULES)
    if kind == "sigmoidal":
        s = 1.0 / (1.0 + np.exp(-np.linspace(-SIGMOID_RADIUS, SIGMOID_RADIUS, num_steps + 1)))
        betas = (s - s[0]) / (s[-1] - s[0])
    else:
        betas = np.concatenate([[0.0], np.geomspace(GEOMETRIC_START, 1.0, num_steps)])
        betas[1] = 1.0 if num_steps == 1 else betas[1]
    betas[0], betas[-1] = 0.0, 1.0  # exactly: f_0 is initial, f_T is p(x, z)
    return betas


def _betas(value: Any, num_steps: int) -> np.ndarray:
    """A schedule's name or its temperatures [num_steps + 1], checked."""
    if isinstance(value, str):
        return schedule(num_steps, value)
    if not _checks.is_concrete(value):
        raise TypeError("schedule must be a name or concrete temperatures (a NumPy array); "
                        "it fixes the chains' path before anything is traced.")
    betas = np.asarray(value, np.float64)
    if betas.shape != (num_steps + 1,):
        raise ValueError(f"schedule must be one of {SCHEDULES} or temperatures of shape "
                         f"[num_steps + 1]=({num_steps + 1},), got shape {betas.shape}.")
    if not (betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)):
        raise ValueError("schedule must rise strictly from exactly 0 to exactly 1, got "
                         f"{betas[:3]} ... {betas[-2:]}.")
    return betas


def _step_sizes(value: Any, num_steps: int) -> jax.Array | None:
    """None (tune them), or [num_steps] positive step sizes for the moves at b_1..b_T."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return jnp.full((num_steps,), _checks.positive_number(value, "step_size"))
    sizes = _checks.float_array(value, "step_size")
    if sizes.shape != (num_steps,):
        raise ValueError(f"step_size must be None, a number or an array of shape "
                         f"[num_steps]=({num_steps},), got shape {tuple(sizes.shape)}.")
    if _checks.is_concrete(sizes) and not np.all(np.isfinite(sizes) & (np.asarray(sizes) > 0)):
        raise ValueError("step_size must hold finite numbers > 0.")
    return sizes


STARTS = ("prior", "encoder")  # where an AIS over a data set starts: model.prior, q(z | x)


class Settings(NamedTuple):
    """The options of AIS over a data set (``evaluate.log_likelihood_ais``, ``bdmc``),
    checked and hashable: a key of the compiled programs' cache."""

    initial: str
    num_steps: int
    num_chains: int
    schedule: str | tuple
    num_leapfrog: int
    step_size: tuple | None

    @classmethod
    def checked(cls, initial, num_steps, num_chains, schedule, num_leapfrog, step_size):
        _checks.one_of(initial, "initial", STARTS)
        num_steps = _checks.positive_int(num_steps, "num_steps")
        betas = _betas(schedule, num_steps)  # checked now, not inside the compiled program
        sizes = _step_sizes(step_size, num_steps)
        return cls(initial, num_steps, _checks.positive_int(num_chains, "num_chains"),
                   schedule if isinstance(schedule, str) else tuple(betas.tolist()),
                   _checks.positive_int(num_leapfrog, "num_leapfrog"),
                   None if sizes is None else tuple(np.asarray(sizes).tolist()))

    def options(self) -> dict:
        """The keyword options of ``log_marginal_ais`` and ``log_marginal_ais_reverse``."""
        return dict(schedule=(self.schedule if isinstance(self.schedule, str)
                              else np.asarray(self.schedule)),
                    num_leapfrog=self.num_leapfrog,
                    step_size=(None if self.step_size is None
                               else np.asarray(self.step_size, np.float32)))
