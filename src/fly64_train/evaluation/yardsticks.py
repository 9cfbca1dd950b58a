"""Yardsticks: the images a reconstruction's score is read against (framework-free NumPy).

A score means little alone: SSIM of a flat image is far from 0, and at low dose no method can
recover the finest detail. Yardsticks, scored through the same evaluation on the same
region as the reconstruction (`evaluation.score_image`):

- the **floor**: a flat object at the truth's mean amplitude (over the scored region) with zero
  phase: what knowing nothing but the mean scores;
- the **group solve** (`group_solve`, for a job whose network is fed a solve of its group, e.g.
  `job=train_raar`): the same groups solved by the same iterations from the flat object with the known
  probe and no network, stitched as the job's patches are: what the network adds over its own input;
- the **dose-limited image**: the truth low-pass filtered at the highest spatial frequency
  at which the noiseless patterns still carry about one expected photon per detector pixel
  (azimuthal average over the test patterns, `dose_limited_cutoff`). Detector pixel q (distance
  from the pattern centre) is object spatial frequency q/N cycles per pixel; beyond the cutoff
  the patterns hold less than a photon per pixel, so the data say little about those frequencies.

`gap_closed(s, floor) = (s − floor)/(1 − floor)` is the fraction of the floor → perfect gap a
score closes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from fly64_train import physics
from fly64_train.data.grouping import GroupIndex
from fly64_train.evaluation.likelihood_bound import canvas_size

PHOTONS_PER_PIXEL = 1.0


def flat_object(ground_truth: np.ndarray, region: Optional[np.ndarray] = None) -> np.ndarray:
    """A flat complex image at the truth's mean amplitude (over `region`), zero phase."""
    amplitude = np.abs(np.asarray(ground_truth))
    mean = float(amplitude[region].mean() if region is not None else amplitude.mean())
    return np.full(amplitude.shape, mean, dtype=np.complex64)


def radial_profile(image: np.ndarray) -> np.ndarray:
    """Azimuthal mean of a centred (fftshifted) square image over integer radii 0 .. N//2."""
    image = np.asarray(image, dtype=np.float64)
    n = image.shape[-1]
    index = np.arange(n) - n // 2
    radius = np.rint(np.hypot(index[:, None], index[None, :])).astype(np.int64).ravel()
    keep = radius <= n // 2
    sums = np.bincount(radius[keep], weights=image.ravel()[keep], minlength=n // 2 + 1)
    counts = np.bincount(radius[keep], minlength=n // 2 + 1)
    return sums / np.maximum(counts, 1)


def dose_limited_cutoff(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                        photon_scale: float, photons: float = PHOTONS_PER_PIXEL,
                        max_patterns: int = 512) -> tuple[float, np.ndarray]:
    """(cutoff in cycles per object pixel, mean expected counts per detector pixel vs radius).

    Expected counts are (s·A)² of the noiseless patterns (A = physics.forward_amplitude, s the
    dataset's photon scale), averaged over up to `max_patterns` evenly spread test positions and
    over each detector ring. The cutoff is the largest ring radius q whose mean is ≥ `photons`,
    as the frequency q/N; the full band (0.5) when every ring reaches it.
    """
    xcoords, ycoords = np.asarray(xcoords, dtype=np.float64), np.asarray(ycoords, dtype=np.float64)
    if xcoords.size == 0:
        raise ValueError("no scan positions to measure the dose-limited cutoff on")
    if not photon_scale > 0:
        raise ValueError(f"photon_scale must be positive, got {photon_scale}")
    pick = np.unique(np.linspace(0, xcoords.size - 1, min(max_patterns, xcoords.size)).astype(np.int64))
    amplitude = physics.forward_amplitude(obj, probe, xcoords[pick], ycoords[pick])
    counts = radial_profile(((photon_scale * amplitude) ** 2).mean(axis=0))
    n = probe.shape[-1]
    above = np.flatnonzero(counts >= photons)
    radius = int(above.max()) if above.size else 0
    return radius / n, counts


def lowpass(obj: np.ndarray, cutoff: float) -> np.ndarray:
    """The complex object with every spatial frequency above `cutoff` (cycles/pixel) removed."""
    obj = np.asarray(obj)
    if not 0 <= cutoff:
        raise ValueError(f"cutoff must be ≥ 0 cycles per pixel, got {cutoff}")
    fy = np.fft.fftfreq(obj.shape[0])[:, None]
    fx = np.fft.fftfreq(obj.shape[1])[None, :]
    keep = np.hypot(fx, fy) <= cutoff + 1e-12
    return np.fft.ifft2(np.fft.fft2(obj) * keep).astype(np.complex64)


def gap_closed(score: Optional[float], floor: Optional[float]) -> Optional[float]:
    """(score − floor)/(1 − floor): 0 at the floor, 1 for a perfect reconstruction."""
    if score is None or floor is None or not floor < 1:
        return None
    return (float(score) - float(floor)) / (1.0 - float(floor))


def group_solve(amplitude: np.ndarray, probe: np.ndarray, groups: GroupIndex, iterations: int, solver: str = "raar",
                band: float = 0.0, chunk: int = 64) -> np.ndarray:
    """Every group's member patches (B, C, N, N) complex64 after `iterations` of the group solve
    (physics.error_reduction_step: 'er' or 'raar', noise `band` in amplitude units, physics.band_in_amplitude)
    from the flat object, on one canvas size for all groups; `amplitude` (n, N, N) is the data's."""
    if int(iterations) < 1:
        raise ValueError(f"the group solve needs at least 1 iteration, got {iterations}")
    N = amplitude.shape[-1]
    size = canvas_size(groups.relative, N)
    parts = [physics.error_reduction_step(amplitude[groups.indices[s:s + chunk]], probe, groups.relative[s:s + chunk],
                                          size, int(iterations), solver, band)
             for s in range(0, groups.n_groups, chunk)]
    return (1.0 + np.concatenate(parts)).astype(np.complex64)
