"""Phase C: the synthetic study data — probe, object, scan positions, diffraction per dose, y-split.

The default study data (a fly64-like scan): a defocused probe with footprint D ≈ 0.6·N
(`make_probe`), an object whose amplitude and phase are two different test pictures
(`make_image_object`; `make_random_object` is the seeded multi-scale alternative), and a fly scan
of rows with a small step along x and positioning jitter (`fly_scan_positions`).

Everything is seeded: the object, the positions and the Poisson noise each draw from their own
stream, `np.random.default_rng([seed, <tag>])` (a SeedSequence), so one seed never feeds two
purposes. The noise of a dose draws from `SeedSequence([seed, NOISE_TAG, bits(dose)])`
(bits = the dose's IEEE-754 float64 bit pattern, so 1000 and 1000.0 are the same dose and every
distinct dose has its own stream), split into one child stream per chunk of patterns. Chunks
have a fixed size for a given N, so the data do not depend on the number of threads.

The forward model is `fly64_train.physics` (extract → illuminate → far field → dose → Poisson);
nothing here re-implements it. Every dose uses the same object, probe and positions; only the
noise differs. For a dataset at dose d with photon scale s:

    counts = (diffraction · s)²   (integers, up to float32 rounding); mean Σ counts per pattern ≈ d.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import scipy.fft
from scipy import ndimage
from skimage import draw

from fly64_train import files, physics, study

logger = logging.getLogger(__name__)

OBJECT_TAG = 0x0B1EC7  # stream tags: one per purpose of the simulation seed
POSITIONS_TAG = 0x5CA9
NOISE_TAG = 0x9015E
# Patterns per chunk = this // N² (16 at N=64, 4 at N=128): the temporaries of a chunk (≈ 2 MB)
# stay in cache and in the allocator's heap (big chunks re-fault fresh pages on every temporary,
# which cost about 20 % of the run at 1024 patterns per chunk).
PIXELS_PER_CHUNK = 1 << 16

# Probe optics, in detector (frequency) pixels, fixed for every N: an N=128 probe is the N=64 one
# sampled twice as finely (as the original study's 128-px probe was the 64-px one upsampled 2x).
PUPIL_RADIUS = 8.0  # radius of the circular pupil (aperture) → bright-field disc in the patterns
# Quadratic phase at the pupil edge (radians). A defocused probe, as at a fly-scan beamline: 2.0π
# spreads it to a footprint D ≈ 0.6·N (38 px at N = 64, 76 px at N = 128; D = the disc holding
# 90 % of |P|², physics.footprint_diameter) with Fresnel rings and a phase chirp; |P|² at the
# patch edge stays below 1 % of its peak, so the probe does not wrap around the patch.
DEFOCUS = 2.0 * np.pi
ASTIGMATISM = 0.35 * np.pi  # r² cos 2θ term at the pupil edge: breaks the radial symmetry
# Odd aberrations, as every real focusing optic has. Without them the probe is centro-symmetric,
# P(−r) = P(r), and then every single pattern has an exact twin: the object conj(O(−r))·P*(r)/P(r)
# diffracts identically, so a network inverting one pattern at a time cannot tell the two apart.
COMA = 0.4 * np.pi  # (3r³ − 2r)·cos(θ − 1.1) at the pupil edge
TREFOIL = 0.2 * np.pi  # r³·cos 3(θ + 0.3)

# The default object: amplitude from one scikit-image test picture, phase from another (bundled
# with scikit-image, no download), so a person sees at a glance whether a reconstruction is right.
AMPLITUDE_IMAGE = "camera"
PHASE_IMAGE = "astronaut"
AMPLITUDE_RANGE = (0.3, 1.0)
PHASE_LIMIT = np.pi / 2  # phase in [−π/2, π/2]: no wrapping anywhere


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), tag])


def noise_seed_sequence(seed: int, dose: float) -> np.random.SeedSequence:
    """The SeedSequence of the Poisson noise at `dose` (same seed and dose → same noise)."""
    dose_bits = int(np.float64(dose).view(np.uint64))
    return np.random.SeedSequence([int(seed), NOISE_TAG, dose_bits])


def chunk_size(N: int) -> int:
    """Patterns simulated together (fixed per N: the noise streams are per chunk)."""
    return max(1, PIXELS_PER_CHUNK // (N * N))


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


# ----------------------------------------------------------------------------------------------
# probe, object, positions

def make_probe(N: int) -> np.ndarray:
    """A deterministic fly-scan-like focused probe (N, N) complex64, max |P| = 1.

    A circular pupil (anti-aliased edge) carrying defocus, astigmatism, coma and trefoil is
    propagated to the sample by an FFT: a defocused spot with footprint D ≈ 0.6·N (90 % of the
    energy; `physics.footprint_diameter`) with Fresnel rings and a phase chirp, not a flat disc,
    and not centro-symmetric (see COMA).
    """
    if N < 8:
        raise ValueError(f"probe size N={N} is too small (need N ≥ 8)")
    freq = scipy.fft.fftshift(scipy.fft.fftfreq(N, d=1.0 / N))  # detector pixels, 0 at N//2
    ky, kx = np.meshgrid(freq, freq, indexing="ij")
    radius = np.hypot(kx, ky) / PUPIL_RADIUS
    angle = np.arctan2(ky, kx)
    pupil = np.clip((1.0 - radius) * PUPIL_RADIUS + 0.5, 0.0, 1.0)  # 1 inside, linear 1-px edge
    phase = (DEFOCUS * radius**2 + ASTIGMATISM * radius**2 * np.cos(2.0 * (angle - 0.5))
             + COMA * (3.0 * radius**3 - 2.0 * radius) * np.cos(angle - 1.1)
             + TREFOIL * radius**3 * np.cos(3.0 * (angle + 0.3)))
    field = scipy.fft.fftshift(scipy.fft.ifft2(scipy.fft.ifftshift(pupil * np.exp(1j * phase))))
    return (field / np.abs(field).max()).astype(np.complex64)


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise (periodic, via scipy.ndimage.fourier_gaussian), zero mean, unit std."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    spectrum = ndimage.fourier_gaussian(scipy.fft.rfft2(noise), sigma, n=size)
    field = scipy.fft.irfft2(spectrum, s=(size, size))
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _features(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sharp features: discs and bars of random size, orientation and sign (skimage.draw)."""
    layer = np.zeros((size, size), dtype=np.float32)
    area = float(size) * size
    for _ in range(max(4, int(area / 8000))):  # discs, radius 2–30 px (log-uniform)
        radius = float(np.exp(rng.uniform(np.log(2.0), np.log(30.0))))
        centre = rng.uniform(0, size, 2)
        rr, cc = draw.disk((centre[0], centre[1]), radius, shape=layer.shape)
        layer[rr, cc] += rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.5)
    for _ in range(max(4, int(area / 12000))):  # bars, 20–200 px long, 1–4 px wide
        length = rng.uniform(20.0, 200.0)
        width = rng.uniform(1.0, 4.0)
        theta = rng.uniform(0.0, np.pi)
        centre = rng.uniform(0, size, 2)
        along = np.array([np.sin(theta), np.cos(theta)]) * length / 2
        across = np.array([np.cos(theta), -np.sin(theta)]) * width / 2
        corners = np.array([centre - along - across, centre + along - across,
                            centre + along + across, centre - along + across])
        rr, cc = draw.polygon(corners[:, 0], corners[:, 1], shape=layer.shape)
        layer[rr, cc] += rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.5)
    return ndimage.gaussian_filter(layer, 0.6)  # soften pixel steps, keep edges sharp


def _squash(values: np.ndarray) -> np.ndarray:
    """Smoothly map a field into (0, 1) (tanh of the standardised field; no hard clipping)."""
    return 0.5 * (1.0 + np.tanh((values - values.mean()) / (1.5 * values.std())))


def make_random_object(size: int, seed: int) -> np.ndarray:
    """A large random object (size, size) complex64 with structure at several scales.

    Amplitude in (0.3, 1), phase in (−π/2, π/2): independent smooth random fields at σ = 2, 6, 20
    and 60 px for amplitude and phase, plus sharp discs and bars that both absorb (lower amplitude)
    and shift the phase, as a material would. Seeded; the same (size, seed) gives the same object.
    """
    if size < 16:
        raise ValueError(f"object size {size} is too small (need ≥ 16 px)")
    rng = _rng(seed, OBJECT_TAG)
    weights = {60.0: 1.0, 20.0: 0.8, 6.0: 0.5, 2.0: 0.25}
    amplitude_field = sum(w * _smooth_field(rng, size, s) for s, w in weights.items())
    phase_field = sum(w * _smooth_field(rng, size, s) for s, w in weights.items())
    features = _features(rng, size)
    amplitude = 0.3 + 0.7 * _squash(amplitude_field - 1.2 * features)
    phase = (np.pi / 2) * (2.0 * _squash(phase_field + 1.5 * features) - 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def _test_picture(name: str, size: int) -> np.ndarray:
    """A scikit-image test picture as grey levels in [0, 1]: its centre square (so nothing is
    stretched), resized (bicubic) to size × size."""
    from skimage import color, data, transform

    picture = getattr(data, name)()
    if picture.ndim == 3:
        picture = color.rgb2gray(picture[..., :3])
    picture = np.asarray(picture, dtype=np.float64)
    side = min(picture.shape)
    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2
    picture = picture[top:top + side, left:left + side]
    picture = (picture - picture.min()) / max(float(np.ptp(picture)), 1e-12)
    if picture.shape != (size, size):
        picture = transform.resize(picture, (size, size), order=3, mode="reflect",
                                   anti_aliasing=min(picture.shape) > size)
    return np.clip(picture, 0.0, 1.0)


def make_picture_object(size: int, amplitude_image: str, phase_image: str) -> np.ndarray:
    """An object (size, size) complex64 from two scikit-image pictures: the first's grey levels
    mapped to amplitude in AMPLITUDE_RANGE, the second's to phase in [−PHASE_LIMIT, PHASE_LIMIT]."""
    if size < 16:
        raise ValueError(f"object size {size} is too small (need ≥ 16 px)")
    low, high = AMPLITUDE_RANGE
    amplitude = low + (high - low) * _test_picture(amplitude_image, size)
    phase = PHASE_LIMIT * (2.0 * _test_picture(phase_image, size) - 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_image_object(size: int) -> np.ndarray:
    """The recognisable default object (size, size) complex64: amplitude from scikit-image's
    `camera` mapped to [0.3, 1], phase from `astronaut` (grey) mapped to [−π/2, π/2].

    Natural pictures carry detail at every scale down to a pixel or two, so SSIM's 7-px window
    sees real structure, and a reconstruction is judged right or wrong by eye. Deterministic.
    """
    return make_picture_object(size, AMPLITUDE_IMAGE, PHASE_IMAGE)


def make_object(size: int, seed: int, kind: str = "images") -> np.ndarray:
    """The synthetic object of `kind`: 'images' (make_image_object, the default; seed unused) or
    'random' (make_random_object, seeded)."""
    if kind == "images":
        return make_image_object(size)
    if kind == "random":
        return make_random_object(size, seed)
    raise ValueError(f"object kind {kind!r} is not known: expected one of {', '.join(study.OBJECT_KINDS)}")


# ----------------------------------------------------------------------------------------------
# extra training tiles: more distinct content for the training split only

TILE_TAG = 0x711E5


def tile_seed(seed: int, *index: int) -> int:
    """A seed of its own for the extra tiles' draws (tile positions, their noise), from `seed`."""
    return int(np.random.SeedSequence([int(seed), TILE_TAG, *map(int, index)]).generate_state(1)[0])


def make_training_tiles(size: int, seed: int, kind: str, count: int) -> list[tuple[np.ndarray, dict]]:
    """`count` extra objects (size, size) complex64 for the training split, with how each was made:
    kind 'images' takes study.TILE_PICTURES in order, 'random' seeded random objects (tile_seed(seed, j))."""
    if count < 0:
        raise ValueError(f"the number of extra training tiles must be ≥ 0, got {count}")
    if kind == "images" and count > len(study.TILE_PICTURES):
        raise ValueError(f"{count} extra training tiles asked for, but only {len(study.TILE_PICTURES)} picture pairs "
                         f"exist for object_kind=images (object_kind=random has no limit)")
    if kind not in study.OBJECT_KINDS:
        raise ValueError(f"object kind {kind!r} is not known: expected one of {', '.join(study.OBJECT_KINDS)}")
    tiles = []
    for index in range(count):
        if kind == "images":
            amplitude_image, phase_image = study.TILE_PICTURES[index]
            tile = make_picture_object(size, amplitude_image, phase_image)
            info = {"amplitude_image": f"skimage.data.{amplitude_image}", "phase_image": f"skimage.data.{phase_image}"}
        else:
            tile_object_seed = tile_seed(seed, index)
            tile = make_random_object(size, tile_object_seed)
            info = {"source": f"make_random_object(size={size}, seed={tile_object_seed})"}
        tiles.append((tile, info))
    return tiles


def fly_scan_positions(object_shape: Sequence[int], N: int, step: float, row_spacing: float,
                       jitter: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fly scan over the object: rows `row_spacing` apart, exposures every `step` px along x
    (serpentine: odd rows run right to left), each position displaced by seeded Gaussian jitter of
    standard deviation `jitter` px (positioning error), as (x, y) float64 in scan order.

    Every position keeps a margin of N/2 inside the object (the bilinear patch of
    `physics.extract_patches` then never reads outside it; jittered positions are clipped to it);
    the grid is centred on the object and does not depend on the jitter.
    """
    height, width = int(object_shape[0]), int(object_shape[1])
    low, high_x, high_y = N / 2, width - 1 - N / 2, height - 1 - N / 2
    if high_x <= low or high_y <= low:
        raise ValueError(f"object {height}×{width} is too small for N={N} patches: positions need a "
                         f"margin of N/2 = {N / 2:g} px on every side")
    for name, value in (("scan step", step), ("row spacing", row_spacing)):
        if not value > 0:
            raise ValueError(f"{name} must be a positive number of pixels, got {value}")
    if not jitter >= 0:
        raise ValueError(f"scan jitter must be ≥ 0 px, got {jitter}")
    n_x, n_y = int((high_x - low) // step) + 1, int((high_y - low) // row_spacing) + 1
    x_row = low + (high_x - low - (n_x - 1) * step) / 2 + step * np.arange(n_x)
    y_rows = low + (high_y - low - (n_y - 1) * row_spacing) / 2 + row_spacing * np.arange(n_y)
    xcoords = np.concatenate([x_row if j % 2 == 0 else x_row[::-1] for j in range(n_y)])
    ycoords = np.repeat(y_rows, n_x)
    rng = _rng(seed, POSITIONS_TAG)
    offsets = rng.normal(0.0, jitter, size=(2, xcoords.size)) if jitter > 0 else np.zeros((2, xcoords.size))
    xcoords = np.clip(xcoords + offsets[0], low, high_x)
    ycoords = np.clip(ycoords + offsets[1], low, high_y)
    return xcoords, ycoords


def split_y(ycoords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train/test masks split at the middle of the scanned y span: train = y < split, test = the rest."""
    ycoords = np.asarray(ycoords, dtype=np.float64)
    split = split_point(ycoords)
    train = ycoords < split
    return train, ~train


def split_point(ycoords: np.ndarray) -> float:
    """min(y) + 0.5·(max(y) − min(y))."""
    ycoords = np.asarray(ycoords, dtype=np.float64)
    return float(ycoords.min() + 0.5 * (ycoords.max() - ycoords.min()))


# ----------------------------------------------------------------------------------------------
# diffraction

def _progress(total: int, desc: str, enabled: Optional[bool]):
    """A progress bar of patterns on stderr when it is a terminal (or when enabled=True)."""
    return files.progress(total, desc, unit="pattern", unit_scale=True, enabled=enabled)


def _run_chunks(task: Callable[[int], int], n_chunks: int, workers: int, bar) -> None:
    if workers <= 1 or n_chunks <= 1:
        for index in range(n_chunks):
            bar.update(task(index))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fly64-sim") as pool:
        for done in pool.map(task, range(n_chunks)):
            bar.update(done)


def far_field(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, *,
              workers: Optional[int] = None, progress: Optional[bool] = None) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free amplitudes (n, N, N) float32 and pattern energies Σ|ψ|² (n,) float64, in chunks."""
    obj = np.asarray(obj, dtype=np.complex64)
    probe = np.asarray(probe, dtype=np.complex64)
    xcoords = np.asarray(xcoords, dtype=np.float64)
    ycoords = np.asarray(ycoords, dtype=np.float64)
    N = probe.shape[-1]
    n = xcoords.shape[0]
    step = chunk_size(N)
    starts = list(range(0, n, step))
    amplitude = np.empty((n, N, N), dtype=np.float32)
    energy = np.empty(n, dtype=np.float64)
    # Chunks of positions sorted by y cover a narrow band of the object: extracting from that band
    # (an integer-offset view, so bit-identical patches) keeps the gather in cache.
    order = np.argsort(ycoords, kind="stable")
    height, width = obj.shape

    def task(index: int) -> int:
        rows = order[starts[index]: starts[index] + step]
        x, y = xcoords[rows], ycoords[rows]
        top = min(max(int(np.floor(y.min())) - N // 2 - 1, 0), height)
        bottom = max(min(int(np.floor(y.max())) + N // 2 + 2, height), top)
        left = min(max(int(np.floor(x.min())) - N // 2 - 1, 0), width)
        right = max(min(int(np.floor(x.max())) + N // 2 + 2, width), left)
        band = obj[top:bottom, left:right]
        if band.size == 0:  # every position of the chunk is off the object
            band, top, left = obj, 0, 0
        waves = physics.illuminate(physics.extract_patches(band, x - left, y - top, N), probe)
        flat = waves.reshape(rows.size, -1).view(np.float32)  # (re, im) pairs: Σ|ψ|² = Σ re² + im²
        energy[rows] = np.einsum("ij,ij->i", flat, flat)
        amplitude[rows] = physics.far_field_amplitude(waves, workers=1)
        return rows.size

    with _progress(n, f"far field N={N}", progress) as bar:
        _run_chunks(task, len(starts), workers or default_workers(), bar)
    return amplitude, energy


def add_noise(amplitude: np.ndarray, photon_scale: float, seed: int, dose: float, *,
              workers: Optional[int] = None, progress: Optional[bool] = None) -> np.ndarray:
    """Poisson-noisy amplitudes (float32) at `photon_scale`, one seeded stream per chunk."""
    n, N = amplitude.shape[0], amplitude.shape[-1]
    step = chunk_size(N)
    starts = list(range(0, n, step))
    streams = noise_seed_sequence(seed, dose).spawn(len(starts))
    noisy = np.empty(amplitude.shape, dtype=np.float32)

    def task(index: int) -> int:
        lo, hi = starts[index], min(starts[index] + step, n)
        rng = np.random.default_rng(streams[index])
        noisy[lo:hi] = physics.poisson_amplitude(amplitude[lo:hi], photon_scale, rng)
        return hi - lo

    with _progress(n, f"Poisson dose={study.format_number(dose)}", progress) as bar:
        _run_chunks(task, len(starts), workers or default_workers(), bar)
    return noisy


def iter_doses(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
               doses: Iterable[float], seed: int, *, workers: Optional[int] = None,
               progress: Optional[bool] = None) -> Iterator[tuple[float, np.ndarray, float]]:
    """`simulate_phase_c` for several doses sharing one far-field pass, one dose at a time (only one
    dose's diffraction need be in memory): (dose, diffraction, photon_scale) in the order given."""
    amplitude, energy = far_field(obj, probe, xcoords, ycoords, workers=workers, progress=progress)
    mean_energy = float(energy.mean())
    for dose in doses:
        scale = physics.dose_scale(mean_energy, float(dose))
        yield dose, add_noise(amplitude, scale, seed, dose, workers=workers, progress=progress), scale


def simulate_doses(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                   doses: Iterable[float], seed: int, *, workers: Optional[int] = None,
                   progress: Optional[bool] = None) -> dict[float, tuple[np.ndarray, float]]:
    """`simulate_phase_c` for several doses sharing one far-field pass: {dose: (diffraction, photon_scale)}."""
    return {dose: (diffraction, scale) for dose, diffraction, scale in
            iter_doses(obj, probe, xcoords, ycoords, doses, seed, workers=workers, progress=progress)}


def simulate_phase_c(obj: np.ndarray, probe: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray,
                     dose: float, seed: int, *, workers: Optional[int] = None,
                     progress: Optional[bool] = None) -> tuple[np.ndarray, float]:
    """Noisy diffraction amplitudes (n, N, N) float32 at `dose` and the photon scale s.

    extract_patches → illuminate → far_field_amplitude → dose_scale(mean Σ|ψ|², dose) →
    poisson_amplitude, in chunks (threads share the work; the result does not depend on how
    many). counts = (diffraction · s)² are the integer Poisson counts; their mean total per
    pattern is `dose` in expectation.
    """
    if not dose > 0:
        raise ValueError(f"dose must be positive, got {dose}")
    return simulate_doses(obj, probe, xcoords, ycoords, [dose], seed, workers=workers,
                          progress=progress)[dose]
