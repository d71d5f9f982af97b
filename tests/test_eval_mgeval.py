"""MGEval on cases whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from livegen.eval import mgeval


def test_identical_sets_overlap_fully_and_diverge_nowhere():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 3))
    c = mgeval.compare(a, a.copy())
    assert c.overlap > 0.9
    assert c.kl < 0.05


def test_two_draws_of_one_distribution_overlap_nearly_fully():
    rng = np.random.default_rng(1)
    c = mgeval.compare(rng.normal(size=(40, 2)), rng.normal(size=(40, 2)))
    assert c.overlap > 0.85
    assert c.kl < 0.1


def test_disjoint_sets_do_not_overlap():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(32, 3))
    c = mgeval.compare(a, a + 10.0)
    assert c.overlap < 0.01
    assert c.kl > 5
    assert c.inter_mean > 5 * c.intra_mean


def test_overlap_of_two_unit_gaussians_one_apart_is_two_phi_of_minus_half():
    # Two N(0, 1) and N(1, 1) densities overlap by 2 * Phi(-0.5) = 0.617; KL(p || q) = 0.5.
    rng = np.random.default_rng(3)
    p, q = rng.normal(0.0, 1.0, 4000), rng.normal(1.0, 1.0, 4000)
    assert mgeval.overlap_area(p, q) == pytest.approx(0.617, abs=0.03)
    assert mgeval.kl_divergence(p, q) == pytest.approx(0.5, abs=0.06)


def test_equal_distances_guard_zero_variance():
    zeros = np.zeros((10, 1))
    same = mgeval.compare(zeros, zeros)
    assert same.overlap == pytest.approx(1.0)
    assert same.kl == pytest.approx(0.0, abs=1e-9)
    apart = mgeval.compare(zeros, zeros + 1.0)
    assert apart.overlap == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(apart.kl) and apart.kl > 5


def test_a_set_of_equal_values_meets_a_mostly_equal_reference_where_it_is_equal():
    # Every generated sample is 0; 29 of 32 reference samples are 0 too: the inter-set distances
    # are 0 in 29 of 32 cases, so the overlap is 29/32 (not near 0 from mismatched bandwidths).
    reference = np.zeros((32, 1))
    reference[:3] = 0.0625
    assert mgeval.compare(np.zeros((32, 1)), reference).overlap == pytest.approx(29 / 32, abs=0.01)


def test_silverman_bandwidth_by_hand():
    # sd 1.581, IQR 2 / 1.34 = 1.493 (the smaller), times 0.9 * 5 ** -0.2.
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert mgeval.silverman_bandwidth(x) == pytest.approx(2 / 1.34 * 0.9 * 5**-0.2)
    assert mgeval.silverman_bandwidth(np.ones(6)) == 0.0


def test_distances_count_every_pair_once():
    a = np.array([[0.0], [3.0], [4.0]])
    b = np.array([[0.0], [1.0]])
    assert sorted(mgeval.intra_distances(a)) == [1.0, 3.0, 4.0]
    assert sorted(mgeval.inter_distances(a, b)) == [0.0, 1.0, 2.0, 3.0, 3.0, 4.0]


def test_histograms_are_compared_as_flat_vectors():
    m = mgeval.as_matrix([np.eye(2), np.zeros((2, 2))])
    assert m.shape == (2, 4)
    with pytest.raises(ValueError, match="same number of values"):
        mgeval.as_matrix([np.zeros(3), np.zeros(4)])


def test_samples_with_undefined_values_are_left_out():
    a = np.array([[0.0], [np.nan], [1.0], [2.0]])
    assert mgeval.compare(a, a).overlap == pytest.approx(mgeval.compare(a[[0, 2, 3]], a[[0, 2, 3]]).overlap)
    lonely = mgeval.compare(np.array([[1.0], [np.nan]]), a)
    assert math.isnan(lonely.overlap) and math.isnan(lonely.kl)


def test_split_half_overlaps_are_deterministic_per_rng():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(24, 2))
    first = mgeval.split_half_overlaps(reference, np.random.default_rng(7), repeats=5)
    again = mgeval.split_half_overlaps(reference, np.random.default_rng(7), repeats=5)
    assert np.array_equal(first, again)
    assert np.all((first > 0.5) & (first <= 1.0))
    assert np.all(np.isnan(mgeval.split_half_overlaps(reference[:3], rng, repeats=2)))
