"""Plain numpy, one matrix at a time, written from the papers' definitions: the reference the measures are
checked against (float64, ``np.linalg.svd``, explicit loops)."""

from __future__ import annotations

import numpy as np


def left_vectors(m: np.ndarray) -> np.ndarray:
    """Left singular vectors (columns) of m, by descending singular value."""
    return np.linalg.svd(m, full_matrices=False)[0]


def intruders(w0: np.ndarray, w: np.ndarray, top_k: int = 10, epsilon: float = 0.5) -> int:
    """Shuttleworth et al.: singular vectors of W among its top k whose best |cos| with any singular vector of W0
    is below ε (left vectors, as PEFT)."""
    u0, u = left_vectors(w0), left_vectors(w)
    count = 0
    for i in range(min(top_k, u.shape[1])):
        best = max(abs(float(np.dot(u[:, i], u0[:, j]))) for j in range(u0.shape[1]))
        count += best < epsilon
    return count


def effective_rank(delta: np.ndarray, energy: float = 0.9) -> int:
    s = np.linalg.svd(delta, compute_uv=False)
    total = float(np.sum(s**2))
    if total == 0:
        return 0
    acc = 0.0
    for k, v in enumerate(s, start=1):
        acc += float(v) ** 2
        if acc >= energy * total:
            return k
    return len(s)


def stable_rank(delta: np.ndarray) -> float:
    s = np.linalg.svd(delta, compute_uv=False)
    return float(np.sum(s**2) / s[0] ** 2) if s[0] > 0 else 0.0


def phi(a: np.ndarray, b: np.ndarray, i: int, j: int) -> float:
    """Hu et al. §7.2: ‖U_A,iᵀ U_B,j‖²_F / min(i, j) of the left singular vectors of A and B."""
    ua, ub = left_vectors(a)[:, :i], left_vectors(b)[:, :j]
    return float(np.linalg.norm(ua.T @ ub, "fro") ** 2 / min(i, j))


def amplification(w0: np.ndarray, delta: np.ndarray, r: int) -> float:
    """Hu et al. §7.3: ‖ΔW‖_F / ‖Uᵀ W0 V‖_F with U, V the top-r singular vectors of ΔW."""
    u, _, vt = np.linalg.svd(delta, full_matrices=False)
    return float(np.linalg.norm(delta, "fro") / np.linalg.norm(u[:, :r].T @ w0 @ vt[:r].T, "fro"))


def alignment(w0: np.ndarray, delta: np.ndarray, r: int) -> float:
    """Share of ‖ΔW‖²_F inside W0's top-r singular subspace (projected on both sides)."""
    u0, _, v0t = np.linalg.svd(w0, full_matrices=False)
    pu, pv = u0[:, :r] @ u0[:, :r].T, v0t[:r].T @ v0t[:r]
    return float(np.linalg.norm(pu @ delta @ pv, "fro") ** 2 / np.linalg.norm(delta, "fro") ** 2)


def numerical_rank(delta: np.ndarray) -> int:
    s = np.linalg.svd(delta, compute_uv=False)
    return int(np.sum(s > s[0] * max(delta.shape) * np.finfo(np.float32).eps))
