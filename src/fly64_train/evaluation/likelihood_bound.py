"""The likelihood yardstick: what a group's own patterns determine about its object, by a search.

PtychoPINN reconstructs each group (one pattern at gridsize 1, C = 4 neighbours at gridsize 2)
from that group's patterns alone, through a network that also carries what it learned in
training (a prior). This yardstick asks what the patterns alone say: for each test group it finds
the maximum-likelihood object (MLE) of the group's measured counts under the Poisson model, with
the known probe and one object canvas shared by the members (each member cut from it by the same
bilinear extraction as the physics), starting from a flat object. Its per-patch correlation with
the truth is then read beside the network's:

- an MLE whose likelihood beats the truth's (it does at dose 1e5) but whose patches correlate
  poorly with the truth means the patterns do not single out the truth: many objects explain
  them equally well, and only a prior can choose (the single-pattern case);
- a network far below the MLE of its own view has not yet used the information in its data.

The search is a lower bound, not the data's limit, wherever its likelihood stays below the truth's:
Adam from a flat object stops short. On the dose-1e5 dense groups it reached 0.27 / 0.65 per patch
(amplitude / phase) after 3,000 iterations, where the group's RAAR solve (physics.raar_iterates,
benchmarks/group_solver.py) reaches 0.51 / 0.85 in 50.

The optimiser is Adam on the log-amplitude and the phase of every canvas pixel, with the exact
gradient of the Poisson negative log-likelihood, in NumPy (framework-free, as all of evaluation/):

    λ = s² |F|²,  F = FFT₂(P · X) (orthonormal),   X = a member's patch of the canvas
    L = Σ (λ − c log λ),   ∂L/∂F* = s² (1 − c/λ) F,   ∂L/∂X* = P* · IFFT₂(∂L/∂F*) (orthonormal)
    ∂L/∂canvas* = the adjoint extraction of ∂L/∂X*, summed over the members
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.fft

from fly64_train import physics, study
from fly64_train.data import grouping
from fly64_train.evaluation import scores

LAMBDA_EPSILON = 1e-9  # expected counts floor inside the logarithm (a dark pixel predicted exactly 0)
DEFAULT_ITERATIONS = 3000
# Adam step in log-amplitude and phase (radians). On the dose-1e5 test patterns 0.02 had not reached
# the truth's likelihood after 2,000 iterations; 0.1 passes it by ~1,500.
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_GROUPS = 32
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def canvas_size(relative_xy: np.ndarray, N: int) -> int:
    """Side P of a square canvas holding every member (N px) around its group centre, plus a margin."""
    reach = float(np.max(np.abs(relative_xy))) if np.size(relative_xy) else 0.0
    return int(N + 2 * np.ceil(reach) + 2)


@dataclass
class _Layout:
    """The groups' canvases (G, P, P) side by side in one (P, G·P) image, so that every member of
    every group is one position of physics.extract_patches / place_patches: xs, ys (G·C,)."""
    P: int
    G: int
    xs: np.ndarray
    ys: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.P, self.G * self.P


def _layout(relative_xy: np.ndarray, N: int) -> _Layout:
    """Members centred at P//2 + rel on their group's canvas (the physics' patch convention)."""
    relative_xy = np.asarray(relative_xy, dtype=np.float64)
    P = canvas_size(relative_xy, N)
    xs, ys, _ = physics.tiled_group_positions(relative_xy, P)
    return _Layout(P=P, G=relative_xy.shape[0], xs=xs, ys=ys)


def extract_members(canvas: np.ndarray, layout: _Layout, N: int) -> np.ndarray:
    """Member patches (G, C, N, N) of canvases (G, P, P): bilinear, physics.extract_patches."""
    tiled = np.concatenate(list(canvas), axis=1)  # (P, G·P)
    return physics.extract_patches(tiled, layout.xs, layout.ys, N).reshape(layout.G, -1, N, N)


def place_members(patches: np.ndarray, layout: _Layout) -> np.ndarray:
    """Adjoint of extract_members: (G, C, N, N) → canvases (G, P, P), physics.place_patches."""
    N = patches.shape[-1]
    tiled = physics.place_patches(patches.reshape(-1, N, N), layout.xs, layout.ys, layout.shape)
    return tiled.reshape(layout.P, layout.G, layout.P).transpose(1, 0, 2)


def poisson_nll(patches: np.ndarray, counts: np.ndarray, probe: np.ndarray, photon_scale: float) -> np.ndarray:
    """Σ over each group's pixels of λ − c·log λ (G,), λ = s²·fftshift|FFT₂(P·X)|² (orthonormal FFT).

    patches (G, C, N, N) complex, counts (G, C, N, N) in the data's (fftshifted) layout."""
    return _nll(patches, scipy.fft.ifftshift(counts, axes=(-2, -1)), probe, photon_scale)[0]


def _nll(patches: np.ndarray, counts: np.ndarray, probe: np.ndarray, photon_scale: float,
         with_gradient: bool = False):
    """poisson_nll on counts already in the FFT's (unshifted) layout; and ∂L/∂X* if asked."""
    s2 = float(photon_scale) ** 2
    spectrum = scipy.fft.fft2(patches * probe, axes=(-2, -1), norm="ortho", workers=-1)
    lam = s2 * (spectrum.real ** 2 + spectrum.imag ** 2) + LAMBDA_EPSILON
    nll = (lam - counts * np.log(lam)).sum(axis=(1, 2, 3), dtype=np.float64)
    if not with_gradient:
        return nll, None
    d_spectrum = (s2 * (1.0 - counts / lam)) * spectrum
    return nll, np.conj(probe) * scipy.fft.ifft2(d_spectrum, axes=(-2, -1), norm="ortho", workers=-1)


@dataclass
class GroupMLE:
    patches: np.ndarray  # (G, C, N, N) complex64: the MLE's member patches
    nll: np.ndarray  # (G,) final negative log-likelihood per group
    history: list  # (iteration, mean NLL) every `record_every` iterations


def group_mle(counts: np.ndarray, probe: np.ndarray, relative_xy: np.ndarray, photon_scale: float,
              iterations: int = DEFAULT_ITERATIONS, learning_rate: float = DEFAULT_LEARNING_RATE,
              record_every: int = 250) -> GroupMLE:
    """Maximum-likelihood object of each group (counts (G, C, N, N), members at relative_xy (G, C, 2))."""
    counts = np.asarray(counts, dtype=np.float32)
    if counts.ndim != 4 or counts.shape[-1] != counts.shape[-2]:
        raise ValueError(f"counts must be (groups, members, N, N), got shape {counts.shape}")
    if not np.isfinite(counts).all() or counts.min() < 0:
        raise ValueError("counts must be finite and non-negative (photon counts)")
    N = counts.shape[-1]
    probe = np.asarray(probe, dtype=np.complex64)
    if probe.shape != (N, N):
        raise ValueError(f"probe {probe.shape} does not match the patterns' {N}×{N}")
    relative_xy = np.asarray(relative_xy, dtype=np.float64)
    if relative_xy.shape != counts.shape[:2] + (2,):
        raise ValueError(f"relative_xy must be (groups, members, 2) = {counts.shape[:2] + (2,)}, "
                         f"got {relative_xy.shape}")
    layout = _layout(relative_xy, N)
    G, P = layout.G, layout.P
    params = np.zeros((2, G, P, P), dtype=np.float32)  # log-amplitude, phase: the flat unit object
    shifted = scipy.fft.ifftshift(counts, axes=(-2, -1))
    first, second = np.zeros_like(params), np.zeros_like(params)
    beta1, beta2 = ADAM_BETAS
    history = []
    for step in range(1, iterations + 1):
        canvas = np.exp(params[0] + 1j * params[1])
        nll, d_patches = _nll(extract_members(canvas, layout, N), shifted, probe, photon_scale,
                              with_gradient=True)
        d_canvas = place_members(d_patches, layout)  # ∂L/∂canvas*
        # dL = 2 Re(conj(g)·O·(da + i dφ)) for O = exp(a + iφ)
        weighted = np.conj(d_canvas) * canvas
        grad = np.stack([2.0 * weighted.real, -2.0 * weighted.imag])
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad ** 2
        params -= (learning_rate * (first / (1 - beta1 ** step))
                   / (np.sqrt(second / (1 - beta2 ** step)) + ADAM_EPSILON))
        if step == 1 or step % record_every == 0:
            history.append((step - 1, float(nll.mean())))
    canvas = np.exp(params[0] + 1j * params[1])
    patches = extract_members(canvas, layout, N)
    return GroupMLE(patches=patches.astype(np.complex64),
                    nll=poisson_nll(patches, counts, probe, photon_scale), history=history)


def likelihood_limited(data, gridsize: int, n_groups: int = DEFAULT_GROUPS, seed: int = 0,
                       neighbor_count: int = study.NEIGHBOR_COUNT, iterations: int = DEFAULT_ITERATIONS,
                       learning_rate: float = DEFAULT_LEARNING_RATE, crop: Optional[int] = None) -> dict:
    """The yardstick on a dataset's test split (a StudyData with obj, probe, positions, diffraction and
    metadata['photon_scale']): per-patch correlation of the group MLE with the truth, over `n_groups`
    groups drawn as the training job draws them, with the NLL of the MLE and of the true patches."""
    N = data.diffraction.shape[-1]
    crop = crop or N // 2
    groups = grouping.make_groups(data.xcoords, data.ycoords, gridsize, neighbor_count, n_groups, seed)
    scale = float(data.metadata["photon_scale"])
    counts = np.rint((np.asarray(data.diffraction[groups.indices], dtype=np.float64) * scale) ** 2)
    result = group_mle(counts, data.probe, groups.relative, scale, iterations, learning_rate)
    members = groups.indices.reshape(-1)
    truth = physics.extract_patches(data.obj, data.xcoords[members], data.ycoords[members], N)
    truth_nll = poisson_nll(truth.reshape(counts.shape), counts, data.probe, scale)
    summary = scores.patchwise_correlation(result.patches.reshape(-1, N, N), truth, crop)
    return {"gridsize": int(gridsize), "groups": int(groups.n_groups), "iterations": int(iterations),
            "amplitude_patch_corr": summary["amplitude_correlation"],
            "phase_patch_corr": summary["phase_correlation"], "crop": int(crop),
            "nll_per_pattern": float(result.nll.sum() / members.size),
            "true_nll_per_pattern": float(truth_nll.sum() / members.size),
            # the MLE explains the counts at least as well as the truth: converged far enough that a
            # poor correlation means the patterns cannot single out the truth
            "beats_truth_likelihood": bool(result.nll.sum() <= truth_nll.sum()),
            "history": result.history}
