"""K-nearest-neighbour groups of scan positions (gridsize g → C = g² patterns per group).

gridsize 1: every pattern is its own group (n_groups caps this by a seeded random subset, kept
in index order).

gridsize ≥ 2: every group starts from a *seed* position (all positions, in index order, or
n_groups of them drawn without replacement, then sorted). Its pool is the K nearest positions
INCLUDING the seed itself (cKDTree, k = K = neighbor_count). The group is the seed FIRST, then
C − 1 members drawn at random without replacement from the seed's K − 1 nearest other positions
(np.random.default_rng(seed), one draw per group). Choice and why: the original drew C of the K
neighbours excluding the seed (so the seed was usually missing, and with K = C every group was the
same 4 points in random order); keeping the seed guarantees that every position anchors a group
and that groups drawn from different seeds differ.

Oversampling (n_groups > number of positions, gridsize ≥ 2) needs enable_oversampling=True: the
first n groups are the standard ones (one per position); the rest are further distinct
combinations (seed + C − 1 of its K − 1 neighbours), distinct as member sets, drawn with the
same generator. Without it, a ValueError explains OVERSAMPLING.

Offsets — the sign convention used everywhere in fly64-train:

    centres[b]     = mean over the group's members of (x, y)             (pixels, float64)
    relative[b, c] = (x, y)[member c] − centres[b]                       (pixels, float32)

so a POSITIVE relative x means the member sits to the right of (larger column than) the group
centre, a positive y below it (larger row). position = centre + relative, exactly. (The original
stored the negated value, `coords_relative = −(member − centre)`, and negated again in its model.)

Channel layout: `grouped(array, indices)` stacks per-pattern arrays (n, N, N) into (B, N, N, C)
with channel c = member c of the group (channel 0 = the seed for gridsize ≥ 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree


@dataclass
class GroupIndex:
    indices: np.ndarray  # (B, C) int64: pattern indices of each group's members
    centres: np.ndarray  # (B, 2) float64: (x, y) mean of the members
    relative: np.ndarray  # (B, C, 2) float32: member (x, y) − centre (positive = where the member sits)

    @property
    def n_groups(self) -> int:
        return int(self.indices.shape[0])

    @property
    def C(self) -> int:
        return int(self.indices.shape[1])


def _offsets(xy: np.ndarray, indices: np.ndarray) -> GroupIndex:
    members = xy[indices]  # (B, C, 2)
    centres = members.mean(axis=1)
    relative = (members - centres[:, None, :]).astype(np.float32)
    return GroupIndex(indices=indices.astype(np.int64), centres=centres, relative=relative)


def _neighbour_pools(xy: np.ndarray, seeds: np.ndarray, K: int) -> np.ndarray:
    """(len(seeds), min(K, n) − 1) nearest OTHER positions of each seed, nearest first."""
    n = xy.shape[0]
    k = min(K + 1, n)  # one spare, in case a duplicate position outranks the seed itself
    _, found = cKDTree(xy).query(xy[seeds], k=k)
    found = found.reshape(len(seeds), k)
    is_seed = found == seeds[:, None]
    # If the seed itself is not among the k hits (more than k duplicates of it), drop the last hit.
    is_seed[~is_seed.any(axis=1), -1] = True
    first = np.argmax(is_seed, axis=1)  # drop exactly one entry per row
    drop = np.zeros_like(is_seed)
    drop[np.arange(len(seeds)), first] = True
    others = found[~drop].reshape(len(seeds), k - 1)
    return others[:, : min(K, n) - 1]


def _draw(rng: np.random.Generator, seeds: np.ndarray, pools: np.ndarray, C: int) -> np.ndarray:
    """Seed first, then C − 1 of its pool at random without replacement."""
    picks = np.argsort(rng.random(pools.shape), axis=1, kind="stable")[:, : C - 1]
    return np.concatenate([seeds[:, None], np.take_along_axis(pools, picks, axis=1)], axis=1)


def make_groups(xcoords: np.ndarray, ycoords: np.ndarray, gridsize: int, neighbor_count: int,
                n_groups: Optional[int], seed: int, enable_oversampling: bool = False) -> GroupIndex:
    """Groups of C = gridsize² patterns (see the module docstring for the algorithm and signs)."""
    xcoords = np.asarray(xcoords, dtype=np.float64).reshape(-1)
    ycoords = np.asarray(ycoords, dtype=np.float64).reshape(-1)
    if xcoords.shape != ycoords.shape:
        raise ValueError(f"xcoords ({xcoords.size}) and ycoords ({ycoords.size}) differ in length")
    if int(gridsize) != gridsize or gridsize < 1:
        raise ValueError(f"gridsize must be a positive integer, got {gridsize}")
    if n_groups is not None and n_groups < 1:
        raise ValueError(f"n_groups must be positive or None (all), got {n_groups}")
    xy = np.column_stack([xcoords, ycoords])
    n = xy.shape[0]
    C = int(gridsize) ** 2
    rng = np.random.default_rng(seed)
    if n == 0:
        raise ValueError("no scan positions to group")

    if C == 1:
        if n_groups is None or n_groups >= n:
            chosen = np.arange(n)
        else:
            chosen = np.sort(rng.choice(n, size=n_groups, replace=False))
        return _offsets(xy, chosen[:, None])

    K = int(neighbor_count)
    if K < C:
        raise ValueError(f"neighbor_count K={K} < C=gridsize²={C}: a group of {C} is drawn from the seed's "
                         f"K nearest positions (itself included), so K must be at least {C}")
    if n < C:
        raise ValueError(f"only {n} scan positions: gridsize {gridsize} groups need at least C={C}")

    if n_groups is not None and n_groups > n and not enable_oversampling:
        raise ValueError(
            f"n_groups={n_groups} exceeds the {n} scan positions: gridsize {gridsize} draws one group per "
            f"seed position without replacement. Set enable_oversampling=true to draw extra distinct "
            f"K-nearest-neighbour combinations per position (OVERSAMPLING; up to "
            f"{n * comb(min(K, n) - 1, C - 1)} groups with K={K}), or lower n_groups")

    if n_groups is None or n_groups >= n:
        seeds = np.arange(n)
    else:
        seeds = np.sort(rng.choice(n, size=n_groups, replace=False))
    pools = _neighbour_pools(xy, seeds, K)
    groups = _draw(rng, seeds, pools, C)
    if n_groups is not None and n_groups > n:
        groups = _oversample(rng, groups, pools, n_groups, C)
    return _offsets(xy, groups)


def _oversample(rng: np.random.Generator, groups: np.ndarray, pools: np.ndarray, n_groups: int, C: int) -> np.ndarray:
    """Extend one-group-per-position `groups` to n_groups distinct member sets."""
    n = groups.shape[0]
    limit = n * comb(pools.shape[1], C - 1)
    if n_groups > limit:
        raise ValueError(f"n_groups={n_groups} exceeds the {limit} distinct groups oversampling can draw "
                         f"({n} positions × C({pools.shape[1]}, {C - 1}) neighbour combinations)")
    seen = {tuple(sorted(row)) for row in groups.tolist()}
    extra: list[list[int]] = []
    stale_rounds = 0
    while n + len(extra) < n_groups:
        missing = n_groups - n - len(extra)
        seeds = rng.integers(0, n, size=max(2 * missing, 64))
        candidates = _draw(rng, seeds, pools[seeds], C)
        before = len(seen)
        for row in candidates.tolist():
            key = tuple(sorted(row))
            if key not in seen:
                seen.add(key)
                extra.append(row)
                if n + len(extra) == n_groups:
                    break
        stale_rounds = stale_rounds + 1 if len(seen) == before else 0
        if stale_rounds >= 20:
            raise ValueError(f"oversampling found only {n + len(extra)} distinct groups of {C} (at most "
                             f"{limit} seed/neighbour combinations exist); lower n_groups")
    return np.concatenate([groups, np.asarray(extra, dtype=np.int64).reshape(-1, C)], axis=0)


def grouped(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Stack per-pattern arrays (n, N, N) into groups (B, N, N, C): channel c = member c."""
    array = np.asarray(array)
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(f"indices must be (B, C), got shape {indices.shape}")
    return np.ascontiguousarray(np.moveaxis(array[indices], 1, -1))
