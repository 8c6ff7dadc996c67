"""Distances between feature sets: Fréchet distance (FID), KID, and k-NN precision/recall.

All follow stylegan2-ada-pytorch's definitions: the covariance is the biased one (divided by N,
accumulated in float64), KID is the unbiased MMD² with the kernel (x·y / d + 1)³ averaged over random
subsets, and precision/recall use k-th nearest-neighbour balls (Kynkäänniemi et al. 2019).
"""

from __future__ import annotations

import numpy as np
import torch


def mean_cov(features: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) covariance in float64, summed chunk by chunk so 50k x 2048 float32 stays cheap."""
    n, d = features.shape
    if n == 0:
        raise ValueError("no features")
    total = np.zeros(d, np.float64)
    outer = np.zeros((d, d), np.float64)
    for start in range(0, n, chunk):
        x = features[start:start + chunk].astype(np.float64)
        total += x.sum(0)
        outer += x.T @ x
    mu = total / n
    return mu, outer / n - np.outer(mu, mu)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh; tiny negative eigenvalues from rounding become 0."""
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½).

    tr (S1 S2)^½ = tr (A S2 A)^½ with A = S1^½, and A S2 A is symmetric PSD: its eigenvalues are real and
    non-negative, so no complex sqrtm (and none of its failures on the singular covariances of small sets).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    a = _psd_sqrt(s1)
    m = a @ s2 @ a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid_from_features(a: np.ndarray, b: np.ndarray,
                      b_stats: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """FID between two feature sets; exact low-rank form when both have fewer items than dimensions.

    With centred X_a (n_a x d) and X_b, the non-zero eigenvalues of S_a S_b are the squared singular values
    of C = X_a X_b^T / sqrt(n_a n_b), so tr (S_a S_b)^½ is C's nuclear norm: an n_a x n_b SVD instead of
    two d x d eigen-decompositions, and no round-off from the d - n zero eigenvalues.
    """
    d = a.shape[1]
    if max(len(a), len(b)) >= d:
        return frechet_distance(*mean_cov(a), *(b_stats if b_stats is not None else mean_cov(b)))
    xa, xb = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = xa.mean(0), xb.mean(0)
    xa -= mu_a
    xb -= mu_b
    c = xa @ xb.T / np.sqrt(len(a) * len(b))
    nuclear = np.linalg.svd(c, compute_uv=False).sum()
    traces = np.square(xa).sum() / len(a) + np.square(xb).sum() / len(b)
    return float(np.square(mu_a - mu_b).sum() + traces - 2 * nuclear)


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)³, averaged over random equal-size subsets of both sets."""
    d = real.shape[1]
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 features per set")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)].astype(np.float64)
        y = real[rng.choice(real.shape[0], m, replace=False)].astype(np.float64)
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        # Within-set sums leave out the diagonal (i == j): that is what makes the estimator unbiased.
        total += (a.sum() - np.trace(a)) / (m * (m - 1)) - 2 * b.sum() / (m * m)
    return float(total / num_subsets)


def _sq_distances(rows: torch.Tensor, cols: torch.Tensor, cols_sq: torch.Tensor) -> torch.Tensor:
    d = (rows * rows).sum(1, keepdim=True) + cols_sq.unsqueeze(0) - 2 * rows @ cols.T
    return d.clamp_(min=0)


def knn_radii(features: torch.Tensor, k: int = 3, row_batch: int = 1024) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest other point, computed row batch by row batch."""
    if features.shape[0] <= k:
        raise ValueError(f"k-NN with k={k} needs more than {k} points, got {features.shape[0]}")
    sq = (features * features).sum(1)
    out = [_sq_distances(r, features, sq).kthvalue(k + 1, dim=1).values  # k + 1: the point itself is at 0
           for r in features.split(row_batch)]
    return torch.cat(out)


def _coverage(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, row_batch: int) -> float:
    """Fraction of probes inside at least one manifold ball."""
    sq = (manifold * manifold).sum(1)
    inside = [(_sq_distances(p, manifold, sq) <= radii.unsqueeze(0)).any(1) for p in probes.split(row_batch)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, row_batch: int = 1024,
                     device: str | torch.device = "cpu") -> tuple[float, float]:
    """Precision: share of fakes inside the real manifold; recall: share of reals inside the fake manifold.

    Distances are computed in float64, so rounding (~1e-12 of the squared norms) never decides whether a
    point is inside a ball: a set against itself gives (1, 1).  Memory is bounded by ``row_batch`` x N
    distances at a time.
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    precision = _coverage(f, r, knn_radii(r, k, row_batch), row_batch)
    recall = _coverage(r, f, knn_radii(f, k, row_batch), row_batch)
    return precision, recall
