"""K-NN grouping: membership, offsets and their sign, sampling, oversampling, channel layout."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from fly64_train.data.grouping import GroupIndex, grouped, make_groups


def _positions(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 500, n), rng.uniform(0, 500, n)


def test_gridsize_1_groups_are_single_patterns_and_n_groups_caps_them():
    x, y = _positions()
    groups = make_groups(x, y, 1, 7, None, seed=123)
    assert isinstance(groups, GroupIndex)
    np.testing.assert_array_equal(groups.indices[:, 0], np.arange(300))
    assert groups.indices.shape == (300, 1) and groups.indices.dtype == np.int64
    np.testing.assert_allclose(groups.centres, np.column_stack([x, y]))
    assert np.all(groups.relative == 0)
    capped = make_groups(x, y, 1, 7, 50, seed=123)
    assert capped.indices.shape == (50, 1) and np.all(np.diff(capped.indices[:, 0]) > 0)
    np.testing.assert_array_equal(capped.indices, make_groups(x, y, 1, 7, 50, seed=123).indices)
    assert not np.array_equal(capped.indices, make_groups(x, y, 1, 7, 50, seed=124).indices)
    assert make_groups(x, y, 1, 7, 1000, seed=123).indices.shape == (300, 1)  # more than n: all of them


def test_gridsize_2_groups_are_the_seed_plus_three_of_its_k_nearest():
    x, y = _positions()
    K = 7
    groups = make_groups(x, y, 2, K, None, seed=123)
    assert groups.indices.shape == (300, 4) and groups.relative.shape == (300, 4, 2)
    assert groups.centres.shape == (300, 2) and groups.relative.dtype == np.float32
    np.testing.assert_array_equal(groups.indices[:, 0], np.arange(300))  # the seed is member 0
    _, nearest = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=K)
    for row, pool in zip(groups.indices, nearest):
        assert len(set(row)) == 4
        assert set(row) <= set(pool)
    # the C − 1 others are a random choice, not always the 3 nearest
    assert any(set(row[1:]) != set(pool[1:4]) for row, pool in zip(groups.indices, nearest))


def test_offsets_are_member_minus_centre_positive_where_the_member_sits():
    x = np.array([0.0, 10.0, 0.0, 10.0, 100.0])
    y = np.array([0.0, 0.0, 20.0, 20.0, 100.0])
    groups = make_groups(x, y, 2, 4, None, seed=0)
    row = 0
    members = groups.indices[row]
    assert set(members) == {0, 1, 2, 3}
    np.testing.assert_allclose(groups.centres[row], [5.0, 10.0])
    for c, member in enumerate(members):
        expected = [x[member] - 5.0, y[member] - 10.0]
        np.testing.assert_allclose(groups.relative[row, c], expected)
        if member == 1:  # right of the centre (larger column) and above it (smaller row)
            assert groups.relative[row, c, 0] > 0 and groups.relative[row, c, 1] < 0
    xy = np.column_stack([x, y])
    np.testing.assert_allclose(groups.centres[:, None, :] + groups.relative, xy[groups.indices], atol=1e-4)
    np.testing.assert_allclose(groups.relative.sum(axis=1), 0.0, atol=1e-4)


def test_n_groups_draws_seeds_without_replacement_and_is_seeded():
    x, y = _positions()
    a = make_groups(x, y, 2, 7, 100, seed=123)
    assert a.indices.shape == (100, 4)
    assert len(set(a.indices[:, 0])) == 100 and np.all(np.diff(a.indices[:, 0]) > 0)
    np.testing.assert_array_equal(a.indices, make_groups(x, y, 2, 7, 100, seed=123).indices)
    assert not np.array_equal(a.indices, make_groups(x, y, 2, 7, 100, seed=124).indices)


def test_oversampling_is_explicit_and_draws_distinct_extra_groups():
    x, y = _positions(n=50)
    with pytest.raises(ValueError, match="OVERSAMPLING") as info:
        make_groups(x, y, 2, 7, 200, seed=1)
    assert "enable_oversampling" in str(info.value)
    groups = make_groups(x, y, 2, 7, 200, seed=1, enable_oversampling=True)
    assert groups.indices.shape == (200, 4)
    np.testing.assert_array_equal(groups.indices[:50, 0], np.arange(50))
    standard = {tuple(sorted(r)) for r in groups.indices[:50].tolist()}
    extra = [tuple(sorted(r)) for r in groups.indices[50:].tolist()]
    assert len(set(extra)) == len(extra) and not set(extra) & standard
    with pytest.raises(ValueError, match="exceeds"):
        make_groups(x, y, 2, 4, 50 * 3 + 1, seed=1, enable_oversampling=True)  # 50 × C(3, 3) = 50 max


def test_invalid_requests_fail_clearly():
    x, y = _positions(n=10)
    with pytest.raises(ValueError, match="K=3 < C"):
        make_groups(x, y, 2, 3, None, seed=1)
    with pytest.raises(ValueError, match="at least C=4"):
        make_groups(x[:3], y[:3], 2, 7, None, seed=1)
    with pytest.raises(ValueError, match="n_groups"):
        make_groups(x, y, 2, 7, 0, seed=1)
    # fewer positions than K: the pool is every other position
    assert make_groups(x[:5], y[:5], 2, 7, None, seed=1).indices.shape == (5, 4)


def test_grouped_stacks_channel_last():
    rng = np.random.default_rng(0)
    patterns = rng.random((30, 8, 8)).astype(np.float32)
    indices = np.array([[0, 5, 7, 9], [3, 2, 1, 0]])
    stacked = grouped(patterns, indices)
    assert stacked.shape == (2, 8, 8, 4) and stacked.flags.c_contiguous
    for b in range(2):
        for c in range(4):
            np.testing.assert_array_equal(stacked[b, :, :, c], patterns[indices[b, c]])
    assert grouped(patterns, np.arange(30)[:, None]).shape == (30, 8, 8, 1)
