"""Settings of a latent refinement and its temperature schedule (SGA+, Perugachi-Diaz et al.,
NeurIPS 2024, section 3; SGA, Yang et al., NeurIPS 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nicengine_kernels.sga_reference import METHODS as RELAXED_METHODS

BASELINES = ("ste", "noise")  # straight-through rounding, additive U(-0.5, 0.5) noise
METHODS = (*RELAXED_METHODS, *BASELINES)

# SGA's schedule (Yang et al.): the temperature holds at 0.5 for 700 steps before decaying. SGA+
# methods decay from the start with an upper bound of 1 (the paper's published configuration).
_TAU_MAX = {"atanh": 0.5}
_DELAY = {"atanh": 700}


@dataclass(frozen=True)
class Refine:
    """How to refine one image's latents before coding them.

    method: one of METHODS: "atanh" (SGA), "linear", "cosine", "ssl" (SGA+ two-class),
        "linear3", "cosine3", "ssl3" (three-class), "ste", "noise" (baselines).
    iterations: Adam steps (the paper: 500 to 2000).
    lr: Adam learning rate.
    lam: the R-D trade-off to refine for; None: the model's training lambda. Another value moves
        the stream along the R-D curve between trained models ("semi-multi-rate").
    tau_max, c, delay: temperature tau(t) = min(exp(-c max(t - delay, 0)), tau_max); None picks
        the method's default (atanh: 0.5 and 700 steps; the others: 1.0 and 0).
    a: the sigmoid-scaled-logit slope (ssl, ssl3); r, n: three-class scale and power.
    time_budget: stop after this many seconds (the best latents so far are coded).
    seed: seeds the rounding noise, so a refinement is repeatable.
    progress: show a progress bar with the true loss; None: only for 100 iterations or more on
        a terminal.
    """

    method: str = "ssl"
    iterations: int = 500
    lr: float = 0.005
    lam: float | None = None
    tau_max: float | None = None
    c: float = 1e-3
    delay: int | None = None
    a: float = 2.3
    r: float = 0.98
    n: float = 1.5
    time_budget: float | None = None
    seed: int = 0
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown refinement method {self.method!r}; expected one of "
                             f"{METHODS}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        for name in ("lr", "lam", "tau_max", "time_budget"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.c < 0 or (self.delay is not None and self.delay < 0):
            raise ValueError(f"c and delay must be >= 0, got {self.c} and {self.delay}")

    def temperature(self, t: int) -> float:
        """tau at step t (0-based)."""
        tau_max = self.tau_max if self.tau_max is not None else _TAU_MAX.get(self.method, 1.0)
        delay = self.delay if self.delay is not None else _DELAY.get(self.method, 0)
        return min(math.exp(-self.c * max(t - delay, 0)), tau_max)
