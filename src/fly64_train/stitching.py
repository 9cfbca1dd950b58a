"""Stitching predicted object patches into one image (framework-free NumPy).

A model predicts one object patch per diffraction pattern; the study scores the image they make
together. Three steps, each of which a reconstruction of real data needs too (none looks at the
ground truth):

1. `phase_offsets`: the far field cannot see a patch's constant phase, so every predicted patch
   carries its own arbitrary offset. Neighbouring patches overlap; the offsets that make them
   agree are found at once for the whole scan from the connection Laplacian of their pairwise
   overlaps (angular synchronisation, solved per connected group of overlapping patches with
   scipy's shift-invert `eigsh`), weighted by the probe's intensity |P|² (where the patch was
   lit). Without it, patches whose offsets disagree cancel when averaged.
2. The overlap-normalised average Σ place(crop_k) / Σ place(ones) of each patch's central
   crop×crop region (bilinear splatting, the adjoint of `physics.extract`).
3. `_least_squares`: a few conjugate-gradient steps towards the image whose windows best match the
   crops. Patches at sub-pixel positions are bilinear samples of the object, so their plain
   average is the object blurred by about half a pixel; the least-squares image removes that blur
   where the positions' sub-pixel offsets differ.

`illumination` is the scan's summed probe intensity Σ_k |P(r − r_k)|²: what evaluation uses to
score only the pixels that light reached.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from fly64_train import physics
from fly64_train.architecture import COVERAGE_EPSILON

STITCH_CHUNK = 1024
STITCH_ITERATIONS = 5  # least-squares refinement steps (perfect jittered patches: SSIM 0.93 → 0.99+)
SYNC_NEIGHBOURS = 8  # pairs per patch in the phase synchronisation: its nearest overlapping patches


def _splat(patches: np.ndarray, centres_xy: np.ndarray, shape: tuple[int, int], chunk: int = STITCH_CHUNK,
           dtype=np.complex128) -> np.ndarray:
    """Σ_k place(patch_k) centred at (x, y) on a canvas of `shape`, flattened (H·W,), in chunks.

    Each patch is splatted bilinearly on a small (n+1)² window (physics.place) and accumulated with
    bincount; the parts outside the canvas are dropped.
    """
    height, width = shape
    n = patches.shape[-1]
    window = n + 1
    local = np.arange(window)
    total = np.zeros(height * width, dtype=dtype)
    for lo in range(0, len(patches), chunk):
        part = patches[lo:lo + chunk]
        top_left = centres_xy[lo:lo + chunk] - n // 2  # coordinate of patch pixel 0, (x, y)
        origin = np.floor(top_left).astype(np.int64)
        centres = (top_left - origin) + n // 2  # local centres: same fractional shift, window origin 0
        values = physics.place(part, centres, (window, window))
        rows = origin[:, 1, None, None] + local[None, :, None]
        cols = origin[:, 0, None, None] + local[None, None, :]
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        flat = (rows * width + cols)[inside]
        values = values[inside]
        if np.iscomplexobj(total):
            total.real += np.bincount(flat, weights=values.real.astype(np.float64), minlength=height * width)
            total.imag += np.bincount(flat, weights=values.imag.astype(np.float64), minlength=height * width)
        else:
            total += np.bincount(flat, weights=values.astype(np.float64), minlength=height * width)
    return total


def _pair_overlaps(patches: np.ndarray, positions: np.ndarray, weight: np.ndarray, pairs: np.ndarray,
                   chunk: int) -> np.ndarray:
    """z_kl = Σ_r w(r)·w(r − δ)·conj(p_k(r))·p_l(r − δ) for each pair (k, l), δ = round(c_l − c_k).

    The weighted inner product of two patches over their overlap (integer-pixel alignment is
    enough to measure a constant phase difference).
    """
    n = patches.shape[-1]
    index = np.arange(n)
    out = np.empty(len(pairs), dtype=np.complex128)
    for lo in range(0, len(pairs), chunk):
        k, l = pairs[lo:lo + chunk, 0], pairs[lo:lo + chunk, 1]
        delta = np.rint(positions[l] - positions[k]).astype(np.int64)  # (x, y)
        rows = index[None, :, None] - delta[:, 1, None, None]  # pixel r of patch k is pixel r − δ of patch l
        cols = index[None, None, :] - delta[:, 0, None, None]
        valid = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
        r, c = np.clip(rows, 0, n - 1), np.clip(cols, 0, n - 1)
        other = patches[l[:, None, None], r, c] * (weight[r, c] * valid)
        out[lo:lo + chunk] = np.einsum("pij,pij->p", np.conj(patches[k]) * weight, other)
    return out


def phase_offsets(patches: np.ndarray, positions_xy: np.ndarray, weight: Optional[np.ndarray] = None,
                  neighbours: int = SYNC_NEIGHBOURS, chunk: int = STITCH_CHUNK) -> np.ndarray:
    """Unit phasors u (n,) complex128 that make overlapping patches agree: u_k·p_k ≈ u_l·p_l.

    Angular synchronisation: Z_kl = weighted overlap inner product of patches k and l (their
    `neighbours` nearest overlapping patches); u = the eigenvector of the smallest eigenvalue of
    the connection Laplacian D − Z (D_kk = Σ_l |Z_kl|), which minimises
    Σ |Z_kl|·|u_k − e^{i·arg Z_kl}·u_l|² over unit-norm u, per connected group of overlapping
    patches, normalised to unit modulus and to a real positive mean. `weight` (n_px, n_px) weighs each patch's pixels
    (the probe's |P|²: where it was lit); default: uniform. Deterministic.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import eigsh
    from scipy.spatial import cKDTree

    patches = np.asarray(patches)
    positions = np.asarray(positions_xy, dtype=np.float64).reshape(-1, 2)
    count, n = len(patches), patches.shape[-1]
    weight = np.ones((n, n)) if weight is None else np.asarray(weight, dtype=np.float64)
    if count < 2:
        return np.ones(count, dtype=np.complex128)
    k_query = min(neighbours + 1, count)
    distance, nearest = cKDTree(positions).query(positions, k=k_query, distance_upper_bound=n - 1)
    distance, nearest = distance.reshape(count, k_query), nearest.reshape(count, k_query)
    rows = np.repeat(np.arange(count), k_query)
    keep = np.isfinite(distance.ravel()) & (nearest.ravel() != rows) & (nearest.ravel() < count)
    pairs = np.stack([rows[keep], nearest.ravel()[keep]], axis=1)
    pairs = np.unique(np.sort(pairs, axis=1), axis=0)  # each unordered pair once
    u = np.ones(count, dtype=np.complex128)
    if len(pairs) == 0:
        return u
    z = _pair_overlaps(patches, positions, weight, pairs, chunk)
    strong = np.abs(z) > 1e-12 * max(float(np.abs(z).max()), 1e-300)
    pairs, z = pairs[strong], z[strong]
    matrix = sparse.coo_matrix((np.concatenate([z, np.conj(z)]),
                                (np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]]))),
                               shape=(count, count)).tocsr()
    # The connection Laplacian L = D − Z (D = Σ_l |Z_kl|) has the consistent phasors as its null
    # vector exactly (L·u = 0 when Z_kl = |Z_kl|·u_k·conj(u_l)), however uneven the degrees; the
    # leading eigenvector of Z alone localises where patches overlap most and is then unreliable.
    degree = np.asarray(abs(matrix).sum(axis=1)).ravel()
    laplacian = (sparse.diags(degree) - matrix).tocsc()
    n_groups, labels = connected_components(abs(matrix), directed=False)
    for group in range(n_groups):
        members = np.flatnonzero(labels == group)
        if members.size < 2:
            continue
        block = laplacian[members][:, members]
        if members.size <= 64:
            _, vectors = np.linalg.eigh(block.toarray())
            vector = vectors[:, 0]
        else:  # shift-invert just below 0: the smallest eigenvalue's vector, from one sparse LU
            shift = -1e-6 * float(degree[members].mean())
            _, vectors = eigsh(block, k=1, sigma=shift, which="LM", v0=np.ones(members.size, dtype=np.complex128))
            vector = vectors[:, 0]
        vector = vector / np.where(np.abs(vector) > 0, np.abs(vector), 1.0)
        mean = vector.mean()
        u[members] = vector * (np.conj(mean) / abs(mean) if abs(mean) > 0 else 1.0)
    return u


def stitch(patches: np.ndarray, positions_xy: np.ndarray, object_shape: tuple[int, int],
           crop: Optional[int] = None, chunk: int = STITCH_CHUNK, iterations: int = STITCH_ITERATIONS,
           synchronise: bool = True, weight: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Stitching of patches (n, N, N) centred at positions (n, 2) = (x, y).

    Returns (image complex128 of `object_shape`, coverage float64). With `synchronise`, every
    patch first gets the constant phase that makes it agree with its neighbours (`phase_offsets`,
    weighted by `weight`, e.g. the probe's |P|²). The image starts as the overlap-normalised
    average Σ place(crop_k) / Σ place(ones) (where coverage > 1e-6, else 0) and is refined by
    `iterations` conjugate-gradient steps towards the least-squares image whose windows best match
    the crops (`_least_squares`); iterations=0, synchronise=False gives the plain average.
    """
    patches = np.asarray(patches)
    positions = np.asarray(positions_xy, dtype=np.float64)
    if patches.ndim == 4:  # (n, C, N, N) groups: flatten
        patches = patches.reshape(-1, *patches.shape[-2:])
        positions = positions.reshape(-1, 2)
    if patches.ndim != 3 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be (n, N, N) square, got shape {patches.shape}")
    if positions.shape != (len(patches), 2):
        raise ValueError(f"positions must be (n, 2) = (x, y) with n = {len(patches)} patches, got {positions.shape}")
    if len(patches) == 0:
        raise ValueError("no patches to stitch")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    height, width = (int(s) for s in object_shape[-2:])
    N = patches.shape[-1]
    crop = N // 2 if crop is None else int(crop)
    if not 1 <= crop <= N:
        raise ValueError(f"stitch crop must be in [1, N={N}], got {crop}")
    if synchronise:
        patches = patches * phase_offsets(patches, positions, weight, chunk=chunk)[:, None, None]
    start = N // 2 - crop // 2
    # A crop centred at c keeps index crop//2 at c: the same convention as the whole patch.
    cropped = patches[:, start:start + crop, start:start + crop].astype(np.complex64, copy=False)
    total = _splat(cropped, positions, (height, width), chunk)
    ones = np.ones((min(chunk, len(positions)), crop, crop), np.float32)
    coverage = _splat_same(ones, positions, (height, width), chunk)
    covered = coverage > COVERAGE_EPSILON
    image = np.zeros_like(total)
    image[covered] = total[covered] / coverage[covered]
    image, coverage = image.reshape(height, width), coverage.reshape(height, width)
    if iterations > 0:
        image = _least_squares(image, cropped, positions, covered.reshape(height, width), iterations, chunk)
    return image, coverage


def _least_squares(start: np.ndarray, patches: np.ndarray, positions: np.ndarray, covered: np.ndarray,
                   iterations: int, chunk: int) -> np.ndarray:
    """A few conjugate-gradient steps on the normal equations AᵀA·I = Aᵀp of the stitch, from `start`.

    A extracts every patch's window from the image (bilinear, physics.extract_patches) and Aᵀ
    splats it back; window pixels whose bilinear support leaves the canvas are left out (the
    canvas has no value there to fit). Patches at sub-pixel positions are bilinear samples of the
    object, so their plain average (the start) is the object blurred by about half a pixel; the
    least-squares image undoes that blur where the positions' offsets differ (perfect patches of a
    jittered scan: amplitude SSIM 0.93 → 0.99+). A fixed, small number of steps keeps it a mild,
    deterministic sharpening of noisy predictions (early-stopped CG regularises).
    """
    n = patches.shape[-1]
    height, width = start.shape
    # Windows entirely off the canvas see nothing; the rest may overhang by up to one window.
    inside = ((positions[:, 0] + n > 0) & (positions[:, 0] - n < width) &
              (positions[:, 1] + n > 0) & (positions[:, 1] - n < height))
    positions, patches = positions[inside], patches[inside]
    if not positions.size:
        return start
    x, y = positions[:, 0], positions[:, 1]
    valid = physics.extract_patches(np.ones((height, width), np.float32), x, y, n) > 1 - 1e-5

    def adjoint(windows: np.ndarray) -> np.ndarray:
        out = _splat(windows * valid, positions, (height, width), chunk).reshape(height, width)
        out[~covered] = 0
        return out

    def normal(image: np.ndarray) -> np.ndarray:
        return adjoint(physics.extract_patches(image, x, y, n))

    image = start.astype(np.complex128)
    residual = adjoint(patches.astype(np.complex128)) - normal(image)
    direction = residual.copy()
    norm = float(np.vdot(residual, residual).real)
    for _ in range(int(iterations)):
        if norm <= 0:
            break
        product = normal(direction)
        curvature = float(np.vdot(direction, product).real)
        if curvature <= 0:
            break
        alpha = norm / curvature
        image += alpha * direction
        residual -= alpha * product
        new_norm = float(np.vdot(residual, residual).real)
        direction = residual + (new_norm / norm) * direction
        norm = new_norm
    return image


def _splat_same(patch_stack: np.ndarray, positions: np.ndarray, shape: tuple[int, int], chunk: int) -> np.ndarray:
    """_splat of one real patch (repeated in `patch_stack`, chunk-sized) at every position."""
    total = np.zeros(shape[0] * shape[1], dtype=np.float64)
    for lo in range(0, len(positions), chunk):
        part = positions[lo:lo + chunk]
        total += _splat(patch_stack[:len(part)], part, shape, chunk, np.float64)
    return total


def illumination(probe: np.ndarray, positions_xy: np.ndarray, shape: tuple[int, int],
                 chunk: int = STITCH_CHUNK) -> np.ndarray:
    """Σ_k |P|² placed at every scan position (x, y): the intensity the scan delivered, (H, W) float64."""
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"probe must be a square 2-D array, got shape {probe.shape}")
    positions = np.asarray(positions_xy, dtype=np.float64).reshape(-1, 2)
    intensity = (np.abs(probe.astype(np.complex128)) ** 2).astype(np.float32)
    stack = np.broadcast_to(intensity, (min(chunk, len(positions)),) + intensity.shape)
    return _splat_same(stack, positions, shape, chunk).reshape(shape)


