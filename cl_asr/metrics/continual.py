"""Continual-learning metrics from an error matrix.

Conventions (stated once, used everywhere, repeated in every report):
  R[i][j] = error on experience j after training through experience i; row -1 is the model before any
  training (the zero-shot model). All values are error rates (lower is better).
  - avg_error   = mean_j R[T-1][j]                                   (lower is better)
  - learned_error = mean_j R[j][j], error right after learning each   (lower is better)
  - bwt         = mean_{j<T-1} (R[j][j] - R[T-1][j])                 (higher is better; negative = forgetting)
  - forgetting  = mean_{j<T-1} (R[T-1][j] - min_{j<=i<T-1} R[i][j])  (lower is better; 0 = nothing lost)
  - fwt         = mean_{j>=1} (R[-1][j] - R[j-1][j])                 (higher is better; forward transfer
                  against zero-shot: how much earlier experiences helped before j was trained)
  - base_error_delta = mean_b (B[T-1][b] - B[-1][b]) on the preservation sets (lower is better;
                  positive = the base languages got worse than zero-shot)
bwt follows CL-MASR (speechbrain benchmarks) for error rates; forgetting follows Chaudhry et al.'s
"best earlier minus final" adapted to errors; fwt follows GEM with zero-shot as the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGHER_IS_BETTER = {
    "avg_error": False,
    "learned_error": False,
    "bwt": True,
    "forgetting": False,
    "fwt": True,
    "base_error_delta": False,
}

SIGN_CONVENTION = (
    "All figures are error rates or differences of error rates. R[i][j] is the error on experience j after "
    "training through experience i (row -1: before training, i.e. zero-shot). avg_error = mean of the final row; "
    "learned_error = mean of the diagonal; bwt = mean(R[j][j] - R[final][j]) over earlier experiences "
    "(positive = later training helped, negative = forgetting); forgetting = mean(R[final][j] - best earlier "
    "R[i][j]) (positive = knowledge lost); fwt = mean(R[-1][j] - R[j-1][j]) (positive = earlier experiences "
    "helped before j was trained); base_error_delta = final minus zero-shot error on the base-language "
    "preservation sets (positive = base languages got worse). Arrows mark the better direction."
)


@dataclass(frozen=True)
class ContinualMetrics:
    avg_error: float
    learned_error: float
    bwt: float
    forgetting: float
    fwt: float
    base_error_delta: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _check_matrix(matrix: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] + 1:
        raise ValueError(
            f"{name} must have T+1 rows (row 0 = before training) and T columns, got shape {m.shape}"
        )
    if np.isnan(m).any():
        raise ValueError(f"{name} has missing cells (NaN): every experience must be evaluated after every step")
    return m


def continual_metrics(new: np.ndarray, base: np.ndarray | None = None) -> ContinualMetrics:
    """Compute the metrics above.

    new:  (T+1) x T matrix; new[0] is the row before training (R[-1]), new[i+1][j] = R[i][j].
    base: (T+1) x B matrix of the preservation sets, same row layout (or None / zero columns).
    """
    m = _check_matrix(new, "experience matrix")
    T = m.shape[1]
    R = lambda i, j: m[i + 1, j]  # noqa: E731 - keeps the formulas readable in the paper's indexing
    final = T - 1
    avg_error = float(np.mean([R(final, j) for j in range(T)]))
    learned_error = float(np.mean([R(j, j) for j in range(T)]))
    if T > 1:
        bwt = float(np.mean([R(j, j) - R(final, j) for j in range(T - 1)]))
        forgetting = float(
            np.mean([R(final, j) - min(R(i, j) for i in range(j, final)) for j in range(T - 1)])
        )
        fwt = float(np.mean([R(-1, j) - R(j - 1, j) for j in range(1, T)]))
    else:
        bwt = forgetting = fwt = 0.0
    if base is not None and np.asarray(base).size:
        b = np.asarray(base, dtype=float)
        if b.shape[0] != m.shape[0]:
            raise ValueError(f"base matrix has {b.shape[0]} rows, experience matrix {m.shape[0]}")
        if np.isnan(b).any():
            raise ValueError("base matrix has missing cells (NaN)")
        base_error_delta = float(np.mean(b[-1] - b[0]))
    else:
        base_error_delta = 0.0
    return ContinualMetrics(avg_error, learned_error, bwt, forgetting, fwt, base_error_delta)
