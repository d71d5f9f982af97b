"""MGEval (Yang and Lerch, 2020): how close a generated set is to a reference set, per feature.

Context: setup (offline analysis).

For one feature (a scalar or a flattened histogram per sample):

- *intra-set distances*: the Euclidean distance between every pair of generated samples;
- *inter-set distances*: between every generated sample and every reference sample;
- a Gaussian kernel density estimate (KDE) of each distance distribution;
- **overlap area** = the integral of ``min(p_intra, p_inter)``: 1 when the generated samples
  are as far from the reference as from each other (they could be drawn from it), near 0 when
  the two distance distributions do not meet;
- **KL divergence** ``KL(intra || inter)``: 0 for identical distributions, larger the more they differ.

Written by hand because the paper's own code needs scipy (``gaussian_kde``, ``quad``) for what
is a few lines of numpy here; two choices differ from it and are deliberate: the bandwidth is
Silverman's robust rule of thumb (scipy's default is Scott's), and the KL divergence is
computed on one common grid for both densities (the paper's code samples each density on its
own grid, which is not a divergence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Points of the grid both densities are evaluated on.
GRID_POINTS = 2048
#: Floor of a bandwidth, as a fraction of the pooled distances' scale (two sets of equal distances).
MIN_BANDWIDTH = 2e-3
#: Added to every grid cell's probability before the logarithm of the KL divergence.
KL_EPSILON = 1e-10


@dataclass(frozen=True, slots=True)
class Comparison:
    """One feature of one generated set against the reference set."""

    overlap: float  # overlap area of the intra-set and inter-set distance densities, 0..1
    kl: float  # KL(intra || inter), nats, >= 0
    intra_mean: float  # mean intra-set distance
    inter_mean: float  # mean inter-set distance


def as_matrix(values: Sequence[float] | Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Samples as a float matrix [n, d]: scalars become one column, histograms are flattened."""
    rows = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if not rows:
        return np.zeros((0, 1))
    width = rows[0].shape[0]
    if any(r.shape[0] != width for r in rows):
        raise ValueError("every sample of a feature must have the same number of values")
    return np.vstack(rows)


def finite_rows(matrix: np.ndarray) -> np.ndarray:
    """The samples whose every value is finite (a feature undefined for a sample is left out)."""
    return matrix[np.all(np.isfinite(matrix), axis=1)]


def intra_distances(a: np.ndarray) -> np.ndarray:
    """Euclidean distances between every unordered pair of rows of ``a`` [n, d] -> [n(n-1)/2]."""
    n = a.shape[0]
    i, j = np.triu_indices(n, k=1)
    return np.asarray(np.linalg.norm(a[i] - a[j], axis=1))


def inter_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of ``a`` [n, d] and every row of ``b`` [m, d] -> [n m]."""
    return np.asarray(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2).ravel())


def silverman_bandwidth(x: np.ndarray) -> float:
    """Silverman's rule of thumb, ``0.9 min(sd, IQR / 1.34) n^(-1/5)``; 0.0 when every value is equal.

    When the robust spread is zero (more than half the values equal) the standard deviation
    alone is used.
    """
    n = x.shape[0]
    sd = float(np.std(x, ddof=1)) if n > 1 else 0.0
    q75, q25 = np.percentile(x, [75, 25]) if n else (0.0, 0.0)
    spread = min(sd, float(q75 - q25) / 1.34)
    if spread <= 0:
        spread = sd
    return 0.9 * spread * n ** (-0.2)


def bandwidths(p_samples: np.ndarray, q_samples: np.ndarray) -> tuple[float, float]:
    """Each sample's Silverman bandwidth, guarded against zero variance.

    A sample whose values are all equal has no spread to measure: it borrows the other
    sample's bandwidth (so a set of equal distances meets a set of mostly equal ones as
    the same spike), and when both are degenerate both get :data:`MIN_BANDWIDTH` of the
    pooled values' scale (equal spikes overlap fully, distinct spikes not at all).
    """
    pooled = np.concatenate([p_samples, q_samples])
    lo, hi = float(pooled.min()), float(pooled.max())
    floor = MIN_BANDWIDTH * max(hi - lo, abs(lo), abs(hi), 1e-12)
    hp, hq = silverman_bandwidth(p_samples), silverman_bandwidth(q_samples)
    if hp <= 0:
        hp = hq
    if hq <= 0:
        hq = hp
    return max(hp, floor), max(hq, floor)


def kde(x: np.ndarray, bandwidth: float, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of the samples ``x`` evaluated on ``grid``."""
    z = (grid[:, None] - x[None, :]) / bandwidth
    return np.asarray(np.exp(-0.5 * z * z).sum(axis=1) / (x.shape[0] * bandwidth * np.sqrt(2 * np.pi)))


def densities(p_samples: np.ndarray, q_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both KDEs on one common grid, each normalised to integrate to 1 on it: (grid, p, q)."""
    pooled = np.concatenate([p_samples, q_samples])
    lo, hi = float(pooled.min()), float(pooled.max())
    hp, hq = bandwidths(p_samples, q_samples)
    pad = 4.0 * max(hp, hq)
    grid = np.linspace(lo - pad, hi + pad, GRID_POINTS)
    dx = float(grid[1] - grid[0])
    p = kde(p_samples, hp, grid)
    q = kde(q_samples, hq, grid)
    p /= p.sum() * dx
    q /= q.sum() * dx
    return grid, p, q


def overlap_area(p_samples: np.ndarray, q_samples: np.ndarray) -> float:
    """The area under ``min(p, q)`` of the two samples' KDEs, 0..1."""
    grid, p, q = densities(p_samples, q_samples)
    dx = float(grid[1] - grid[0])
    return float(min(1.0, np.minimum(p, q).sum() * dx))


def kl_divergence(p_samples: np.ndarray, q_samples: np.ndarray) -> float:
    """``KL(p || q)`` in nats between the two samples' KDEs, on their common grid."""
    grid, p, q = densities(p_samples, q_samples)
    dx = float(grid[1] - grid[0])
    pm, qm = p * dx, q * dx
    return float(max(0.0, np.sum(pm * np.log((pm + KL_EPSILON) / (qm + KL_EPSILON)))))


def compare(generated: np.ndarray, reference: np.ndarray) -> Comparison:
    """MGEval for one feature: ``generated`` [n, d] against ``reference`` [m, d].

    Samples with a non-finite value are left out. Needs at least 2 generated samples
    and 1 reference sample; otherwise every figure is NaN.
    """
    a, b = finite_rows(np.atleast_2d(generated)), finite_rows(np.atleast_2d(reference))
    if a.shape[0] < 2 or b.shape[0] < 1:
        nan = float("nan")
        return Comparison(nan, nan, nan, nan)
    intra = intra_distances(a)
    inter = inter_distances(a, b)
    return Comparison(
        overlap=overlap_area(intra, inter),
        kl=kl_divergence(intra, inter),
        intra_mean=float(intra.mean()),
        inter_mean=float(inter.mean()),
    )


def split_half_overlaps(reference: np.ndarray, rng: np.random.Generator, repeats: int = 20) -> np.ndarray:
    """What real music scores against itself: MGEval overlap of one random half of the
    reference set against the other half, for ``repeats`` random splits.

    This is the scale an overlap is read on (a real set rarely reaches 1 with few samples),
    and where the chart's thresholds come from.
    """
    b = finite_rows(np.atleast_2d(reference))
    n = b.shape[0]
    if n < 4:
        return np.full(repeats, np.nan)
    out = np.empty(repeats)
    for k in range(repeats):
        order = rng.permutation(n)
        half = n // 2
        out[k] = compare(b[order[:half]], b[order[half:]]).overlap
    return out
