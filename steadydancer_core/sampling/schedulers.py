"""Flow-matching schedules and solvers: UniPC (bh2), DPM-Solver++ (2M, midpoint) and Euler.

Conventions (as in the official Wan / SteadyDancer sampler):

* the model predicts the flow velocity ``v`` with ``x_sigma = (1 - sigma) * x0 + sigma * noise``, so the data
  estimate is ``x0 = x - sigma * v``;
* ``sigmas`` is float32 [S + 1], descending, ending with 0; ``timesteps`` is int64 [S] = ``sigma * 1000``
  truncated toward zero (the integer the DiT is fed, while the solver uses the float sigmas);
* ``shift(s) = H * s / (1 + (H - 1) * s)``.

UniPC starts from ``1 - 1/1000`` (the first training sigma), DPM++ and Euler from exactly 1.0.
A solver is a small stateful object: ``solver.step(velocity, sample) -> next sample``, called once per sigma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .defaults import NUM_TRAIN_TIMESTEPS, SOLVER_ORDER, SOLVERS


@dataclass(frozen=True)
class Schedule:
    """``sigmas`` float32 [S + 1] (last 0); ``timesteps`` int64 [S]."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    def __post_init__(self):
        if self.sigmas.ndim != 1 or self.timesteps.ndim != 1 or len(self.sigmas) != len(self.timesteps) + 1:
            raise ValueError("Schedule needs sigmas [S+1] and timesteps [S]")

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Flow-matching time shift ``H*s / (1 + (H-1)*s)`` in float64."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def unipc_sigma_max(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> float:
    """The largest training sigma of the UniPC scheduler, ``1 - 1/N`` rounded through float32 (0.999...)."""
    alphas = np.linspace(1, 1 / num_train_timesteps, num_train_timesteps)[::-1]
    return float(torch.tensor(1.0 - alphas[0], dtype=torch.float32).item())


def base_sigmas(steps: int, shift: float, start: float = 1.0) -> np.ndarray:
    """``shift(linspace(start, 0, steps + 1)[:-1])`` in float64, [steps]."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigmas(np.linspace(start, 0.0, steps + 1)[:-1], shift)


def schedule_from_sigmas(sigmas: Sequence[float] | np.ndarray,
                         num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Schedule:
    """Schedule from explicit (already shifted) sigmas; a trailing 0 is appended when missing.

    Custom sigmas must be in (0, 1] and strictly decreasing (a final 0 may be given).
    """
    arr = np.asarray(list(sigmas) if not isinstance(sigmas, np.ndarray) else sigmas, dtype=np.float64).reshape(-1)
    if arr.size and arr[-1] == 0.0:
        arr = arr[:-1]
    if arr.size == 0:
        raise ValueError("custom sigmas: need at least one non-zero sigma (e.g. [1.0, 0.5, 0.0])")
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ValueError(f"custom sigmas must lie in (0, 1] with an optional final 0; got {arr.tolist()}")
    if np.any(np.diff(arr) >= 0):
        raise ValueError(f"custom sigmas must be strictly decreasing; got {arr.tolist()}")
    timesteps = torch.from_numpy(arr * num_train_timesteps).to(torch.int64)
    full = np.concatenate([arr, [0.0]]).astype(np.float32)
    return Schedule(sigmas=torch.from_numpy(full), timesteps=timesteps)


def make_schedule(solver: str, steps: int, shift: float, sigmas: Sequence[float] | None = None) -> Schedule:
    """The official schedule of ``solver`` (``unipc`` starts at 0.999 before shifting, others at 1.0).

    ``sigmas`` (custom, already shifted) overrides ``steps`` and ``shift``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if sigmas is not None:
        return schedule_from_sigmas(sigmas)
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    start = unipc_sigma_max() if solver == "unipc" else 1.0
    return schedule_from_sigmas(base_sigmas(steps, shift, start))


def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 1 - sigma, sigma


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR ``log(alpha) - log(sigma)`` (+inf at sigma 0, -inf at sigma 1)."""
    alpha, sigma = _alpha_sigma(sigma)
    return torch.log(alpha) - torch.log(sigma)


class EulerSolver:
    """First-order flow Euler: ``x + (sigma_next - sigma) * v``."""

    def __init__(self, schedule: Schedule):
        self.sigmas = schedule.sigmas
        self.index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        s, s_next = self.sigmas[self.index], self.sigmas[self.index + 1]
        self.index += 1
        return (sample.float() + (s_next - s) * velocity.float()).to(sample.dtype)


class DPMSolverPP:
    """Multistep DPM-Solver++ (data prediction, midpoint, order 2, lower order on the final steps)."""

    def __init__(self, schedule: Schedule, order: int = SOLVER_ORDER):
        if order not in (1, 2):
            raise ValueError(f"DPM++ order must be 1 or 2, got {order}")
        self.sigmas = schedule.sigmas
        self.order = order
        self.history: list[torch.Tensor] = []
        self.index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        i, n = self.index, len(self.sigmas) - 1
        x0 = sample - self.sigmas[i] * velocity
        self.history = (self.history + [x0])[-self.order:]
        sample = sample.to(torch.float32)
        final_first_order = i == n - 1  # final sigma is zero
        if self.order == 1 or len(self.history) < 2 or final_first_order:
            out = dpm_first_order(x0, sample, self.sigmas[i], self.sigmas[i + 1])
        else:
            out = dpm_second_order(self.history[-1], self.history[-2], sample,
                                   self.sigmas[i - 1], self.sigmas[i], self.sigmas[i + 1])
        self.index += 1
        return out.to(x0.dtype)


def dpm_first_order(x0: torch.Tensor, sample: torch.Tensor, sigma_s: torch.Tensor,
                    sigma_t: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++ 1 (= DDIM in data prediction) from sigma_s to sigma_t."""
    alpha_t = 1 - sigma_t
    h = _lambda(sigma_t) - _lambda(sigma_s)
    return (sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0


def dpm_second_order(m0: torch.Tensor, m1: torch.Tensor, sample: torch.Tensor, sigma_s1: torch.Tensor,
                     sigma_s0: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++ 2M (midpoint) from sigma_s0 to sigma_t using the data estimates m0 (at s0) and m1 (at s1)."""
    alpha_t = 1 - sigma_t
    lam_t, lam_s0, lam_s1 = _lambda(sigma_t), _lambda(sigma_s0), _lambda(sigma_s1)
    h, h_0 = lam_t - lam_s0, lam_s0 - lam_s1
    r0 = h_0 / h
    d1 = (1.0 / r0) * (m0 - m1)
    coef = alpha_t * (torch.exp(-h) - 1.0)
    return (sigma_t / sigma_s0) * sample - coef * m0 - 0.5 * coef * d1


def _unipc_coefficients(rks: list[torch.Tensor], hh: torch.Tensor, order: int):
    """R (order x order) and b (order) of the UniPC B(h) = expm1(hh) ("bh2") linear system."""
    rk_t = torch.stack([r.to(torch.float32) for r in rks] + [torch.tensor(1.0)])
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = torch.expm1(hh)
    factorial, rows, b = 1, [], []
    for k in range(1, order + 1):
        rows.append(torch.pow(rk_t, k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(b), h_phi_1, b_h


def _differences(history: list[torch.Tensor], sigmas: torch.Tensor, base: int, lam_s0: torch.Tensor,
                 h: torch.Tensor, order: int):
    """rk_i and D1_i = (m_i - m0) / rk_i for the i-th previous data estimate (sigma index base - i)."""
    m0, rks, d1s = history[-1], [], []
    for i in range(1, order):
        rk = (_lambda(sigmas[base - i]) - lam_s0) / h
        rks.append(rk)
        d1s.append((history[-(i + 1)] - m0) / rk)
    return rks, d1s


def _weighted(rhos: torch.Tensor, d1s: list[torch.Tensor]):
    if not d1s:
        return 0
    out = rhos[0] * d1s[0]
    for rho, d in zip(rhos[1:], d1s[1:]):
        out = out + rho * d
    return out


class UniPCSolver:
    """Multistep UniPC for flow matching (predict_x0, B(h) = expm1, order 2, corrector on every step but the first,
    lower order on the final steps and during warm-up), as the shipped FlowUniPCMultistepScheduler."""

    def __init__(self, schedule: Schedule, order: int = SOLVER_ORDER, disable_corrector: Sequence[int] = ()):
        if order < 1:
            raise ValueError(f"UniPC order must be >= 1, got {order}")
        self.sigmas = schedule.sigmas
        self.order = order
        self.disable_corrector = tuple(disable_corrector)
        self.history: list[torch.Tensor] = []
        self.last_sample: torch.Tensor | None = None
        self.this_order = 1
        self.index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        i, n = self.index, len(self.sigmas) - 1
        x0 = sample - self.sigmas[i] * velocity
        if i > 0 and (i - 1) not in self.disable_corrector and self.last_sample is not None:
            sample = self._corrector(x0, self.last_sample, sample, self.this_order)
        self.history = (self.history + [x0])[-self.order:]
        self.this_order = min(self.order, n - i, len(self.history))
        self.last_sample = sample
        out = self._predictor(sample, self.this_order)
        self.index += 1
        return out

    def _predictor(self, x: torch.Tensor, order: int) -> torch.Tensor:
        i, sig = self.index, self.sigmas
        sigma_t, sigma_s0 = sig[i + 1], sig[i]
        alpha_t = 1 - sigma_t
        lam_s0 = _lambda(sigma_s0)
        h = _lambda(sigma_t) - lam_s0
        rks, d1s = _differences(self.history, sig, i, lam_s0, h, order)
        r, b, h_phi_1, b_h = _unipc_coefficients(rks, -h, order)
        if d1s:
            rhos = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
            res = _weighted(rhos.to(x.dtype), d1s)
        else:
            res = 0
        x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * self.history[-1] - alpha_t * b_h * res
        return x_t.to(x.dtype)

    def _corrector(self, model_t: torch.Tensor, last: torch.Tensor, this: torch.Tensor, order: int) -> torch.Tensor:
        i, sig = self.index, self.sigmas
        sigma_t, sigma_s0 = sig[i], sig[i - 1]
        alpha_t = 1 - sigma_t
        lam_s0 = _lambda(sigma_s0)
        h = _lambda(sigma_t) - lam_s0
        rks, d1s = _differences(self.history, sig, i - 1, lam_s0, h, order)
        r, b, h_phi_1, b_h = _unipc_coefficients(rks, -h, order)
        rhos = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r, b)
        rhos = rhos.to(last.dtype)
        m0 = self.history[-1]
        x_t = sigma_t / sigma_s0 * last - alpha_t * h_phi_1 * m0
        x_t = x_t - alpha_t * b_h * (_weighted(rhos[:-1], d1s) + rhos[-1] * (model_t - m0))
        return x_t.to(last.dtype)


def make_solver(name: str, schedule: Schedule):
    """A fresh solver for one sampling run."""
    if name == "unipc":
        return UniPCSolver(schedule)
    if name == "dpm++":
        return DPMSolverPP(schedule)
    if name == "euler":
        return EulerSolver(schedule)
    raise ValueError(f"unknown solver {name!r}; choose one of {SOLVERS}")
