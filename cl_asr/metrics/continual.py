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
  - intransigence = mean_j (R[j][j] - J[j]) where J is the joint model's final error (lower is better;
                  positive = each experience was learned worse than training on everything at once would)
bwt follows CL-MASR (speechbrain benchmarks) for error rates; forgetting and intransigence follow Chaudhry et
al. (2018) adapted to errors; fwt follows GEM with zero-shot as the reference. A joint model has only the
rows before and after training: its avg_error and base_error_delta are defined, the other metrics are not (NaN).
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
    "intransigence": False,
}

SIGN_CONVENTION = (
    "All figures are error rates or differences of error rates. R[i][j] is the error on experience j after "
    "training through experience i (row -1: before training, i.e. zero-shot). avg_error = mean of the final row; "
    "learned_error = mean of the diagonal; bwt = mean(R[j][j] - R[final][j]) over earlier experiences "
    "(positive = later training helped, negative = forgetting); forgetting = mean(R[final][j] - best earlier "
    "R[i][j]) (positive = knowledge lost); fwt = mean(R[-1][j] - R[j-1][j]) (positive = earlier experiences "
    "helped before j was trained); base_error_delta = final minus zero-shot error on the base-language "
    "preservation sets (positive = base languages got worse); intransigence = mean(R[j][j] - joint's final "
    "error on j) (positive = learned worse than joint training on everything at once). Arrows mark the "
    "better direction."
)


@dataclass(frozen=True)
class ContinualMetrics:
    avg_error: float
    learned_error: float
    bwt: float
    forgetting: float
    fwt: float
    base_error_delta: float
    intransigence: float = float("nan")

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


def _base_delta(base: np.ndarray | None, rows: int) -> float:
    if base is None or not np.asarray(base).size:
        return 0.0
    b = np.asarray(base, dtype=float)
    if b.shape[0] != rows:
        raise ValueError(f"base matrix has {b.shape[0]} rows, experience matrix {rows}")
    if np.isnan(b[[0, -1]]).any():
        raise ValueError("base matrix has missing cells (NaN)")
    return float(np.mean(b[-1] - b[0]))


def joint_metrics(new: np.ndarray, base: np.ndarray | None = None) -> ContinualMetrics:
    """Metrics of a joint model: only the first (before training) and last rows exist."""
    m = np.asarray(new, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] + 1 or np.isnan(m[[0, -1]]).any():
        raise ValueError(f"joint matrix needs complete first and last rows, got shape {m.shape}")
    nan = float("nan")
    return ContinualMetrics(float(np.mean(m[-1])), nan, nan, nan, nan, _base_delta(base, m.shape[0]))


def continual_metrics_batch(new: np.ndarray, base: np.ndarray | None = None,
                            joint_final: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The metrics above over leading batch axes (bootstrap replicates): new [..., T+1, T], base [..., T+1, B]
    or None, joint_final [..., T] or None; returns name -> array [...]. No validation: see continual_metrics."""
    m = np.asarray(new, dtype=float)
    T = m.shape[-1]
    final = m[..., T, :]  # R[T-1][j]
    diag = m[..., 1:, :].diagonal(axis1=-2, axis2=-1)  # R[j][j]
    out = {"avg_error": final.mean(-1), "learned_error": diag.mean(-1)}
    if T > 1:
        out["bwt"] = (diag[..., :-1] - final[..., :-1]).mean(-1)
        # best error on j at any step from learning j up to (not including) the last
        best = np.stack([m[..., 1 + j:T, j].min(-1) for j in range(T - 1)], -1)
        out["forgetting"] = (final[..., :-1] - best).mean(-1)
        out["fwt"] = (m[..., 0, 1:] - m[..., 1:T, :].diagonal(offset=1, axis1=-2, axis2=-1)).mean(-1)
    else:
        out["bwt"] = out["forgetting"] = out["fwt"] = np.zeros(m.shape[:-2])
    if base is None or not np.asarray(base).size:
        out["base_error_delta"] = np.zeros(m.shape[:-2])
    else:
        b = np.asarray(base, dtype=float)
        out["base_error_delta"] = (b[..., -1, :] - b[..., 0, :]).mean(-1)
    out["intransigence"] = (np.full(m.shape[:-2], np.nan) if joint_final is None
                            else (diag - np.asarray(joint_final, dtype=float)).mean(-1))
    return out


def joint_metrics_batch(new: np.ndarray, base: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A joint model's metrics over leading batch axes: avg_error and base_error_delta, the rest NaN."""
    m = np.asarray(new, dtype=float)
    nan = np.full(m.shape[:-2], np.nan)
    delta = (np.zeros(m.shape[:-2]) if base is None or not np.asarray(base).size
             else (np.asarray(base, dtype=float)[..., -1, :] - np.asarray(base, dtype=float)[..., 0, :]).mean(-1))
    return {"avg_error": m[..., -1, :].mean(-1), "learned_error": nan, "bwt": nan, "forgetting": nan, "fwt": nan,
            "base_error_delta": delta, "intransigence": nan}


def continual_metrics(new: np.ndarray, base: np.ndarray | None = None,
                      joint_final: np.ndarray | None = None) -> ContinualMetrics:
    """Compute the metrics above.

    new:  (T+1) x T matrix; new[0] is the row before training (R[-1]), new[i+1][j] = R[i][j].
    base: (T+1) x B matrix of the preservation sets, same row layout (or None / zero columns).
    joint_final: the joint model's final error per experience (T values), for intransigence.
    """
    m = _check_matrix(new, "experience matrix")
    T = m.shape[1]
    if base is not None and np.isnan(np.asarray(base, dtype=float)).any():
        raise ValueError("base matrix has missing cells (NaN)")
    _base_delta(base, m.shape[0])  # checks the base matrix's shape
    if joint_final is not None:
        joint_final = np.asarray(joint_final, dtype=float)
        if joint_final.shape != (T,):
            raise ValueError(f"joint_final must hold {T} values, got shape {joint_final.shape}")
    values = continual_metrics_batch(m, base, joint_final)
    return ContinualMetrics(**{k: float(v) for k, v in values.items()})


# CL-MASR's measures (speechbrain/benchmarks, CL_MASR), on word error rates W (rows: after training through each
# experience, row -1 first), at the end of the stream (k = T-1), beside ours:
#   AWER = mean_j W[T-1][j]                         (= our avg_error, in WER)
#   BWT  = mean_{j<T-1} (W[j][j] - W[T-1][j])       (= our bwt, in WER; negative = forgetting)
#   IM   = mean_j (W[j][j] - J[j]), J = the joint model's final WER      (= our intransigence, in WER)
#   FWT  = mean_j (S[j] - W[j][j]), S[j] = the WER on j of a model fine-tuned on j alone from the pretrained one
#          (the `single_task` strategy); ours is against zero-shot before j is learned: R[-1][j] - R[j-1][j].
CLMASR_FORMULAS = (
    "CL-MASR's measures (speechbrain/benchmarks, CL_MASR) on WER at the end of the stream: AWER = mean_j W[T][j] "
    "(the final average WER); BWT = mean_{j<T} (W[j][j] - W[T][j]) (negative = forgetting); IM = mean_j (W[j][j] - "
    "J[j]), J the joint model's final WER (positive = learned worse than joint training); FWT = mean_j (S[j] - "
    "W[j][j]), S[j] the WER on j of a model fine-tuned on j alone (the `single_task` strategy; positive = the "
    "stream helped). Ours differ in FWT's reference (zero-shot before j is learned) and in the metric (the "
    "scenario's); AWER, BWT and IM are ours computed on WER.")


def clmasr_metrics(new: np.ndarray, joint_final: np.ndarray | None = None,
                   single_diag: np.ndarray | None = None) -> dict[str, float]:
    """AWER, BWT, IM and FWT as CL-MASR defines them (CLMASR_FORMULAS) from a (T+1) x T WER matrix (row 0 =
    before training), the joint model's final WER per experience and the single-task model's WER on each
    experience right after learning it (its diagonal); a measure whose reference is missing is NaN."""
    m = _check_matrix(new, "WER matrix")
    T = m.shape[1]
    diag, final = np.diagonal(m[1:]), m[T]
    nan = float("nan")
    return {
        "clmasr_awer": float(final.mean()),
        "clmasr_bwt": float((diag[:-1] - final[:-1]).mean()) if T > 1 else 0.0,
        "clmasr_im": nan if joint_final is None else float((diag - np.asarray(joint_final, dtype=float)).mean()),
        "clmasr_fwt": nan if single_diag is None else float((np.asarray(single_diag, dtype=float) - diag).mean()),
    }
