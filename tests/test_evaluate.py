"""Evaluation: stitching reproduces a known object, alignment removes the ambiguities, metrics are
perfect for a perfect reconstruction and degrade with noise, files are written."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fly64_train import evaluation, physics, stitching, study
from fly64_train.data import simulate
from fly64_train.data.overlap import spaced_subset

N = 32
SHAPE = (150, 180)


def make_object(seed: int = 0, shape=SHAPE, sigma: float = 2.0, phase_span: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)

    def field():
        f = gaussian_filter(rng.random(shape), sigma)
        return (f - f.min()) / (f.max() - f.min())

    amplitude = 0.4 + 0.6 * field()
    phase = phase_span * (field() - 0.5)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def scan(n: int, seed: int = 1, integer: bool = True, margin: int = N, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(margin, shape[1] - margin, n), rng.uniform(margin, shape[0] - margin, n)], axis=1)
    return np.round(xy) if integer else xy


@pytest.fixture(scope="module")
def obj():
    return make_object()


def _perfect(m: dict) -> None:
    for part in ("amplitude", "phase"):
        assert m[part]["mae"] < 1e-5, part
        assert m[part]["mse"] < 1e-9, part
        assert m[part]["ssim"] == pytest.approx(1.0, abs=1e-5), part
        assert m[part]["psnr"] > 90 or math.isinf(m[part]["psnr"]), part
        assert m[part]["frc50"] == m[part]["frc_nyquist_index"], part
        assert m[part]["frc50_fraction_nyquist"] == 1.0, part


# ----------------------------------------------------------------------------- stitching

def test_stitch_exact_patches_reproduces_object(obj):
    xy = scan(3000)
    patches = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
    image, coverage = stitching.stitch(patches, xy, obj.shape)
    covered = coverage > 1e-6
    assert covered.mean() > 0.3
    np.testing.assert_allclose(image[covered], obj[covered], atol=2e-6)
    assert np.all(image[~covered] == 0)
    # Only the central N//2 of each patch is used: nothing beyond N//4 of the outermost positions.
    rows, cols = np.nonzero(covered)
    assert rows.min() >= xy[:, 1].min() - N // 4 and cols.max() < xy[:, 0].max() + N // 4


def test_stitch_subpixel_positions_of_smooth_object(obj):
    smooth = make_object(sigma=6.0)
    xy = scan(1500, integer=False)
    patches = physics.extract_patches(smooth, xy[:, 0], xy[:, 1], N)
    image, coverage = stitching.stitch(patches, xy, smooth.shape)
    well = coverage >= 0.5
    error = np.abs(image - smooth)[well]
    assert error.mean() < 2e-3 and error.max() < 5e-2  # two bilinear interpolations


def test_stitch_equals_physics_place(obj):
    xy = scan(12, integer=False)
    patches = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
    crop = 12
    image, coverage = stitching.stitch(patches, xy, obj.shape, crop=crop, iterations=0, synchronise=False)
    s = N // 2 - crop // 2
    cropped = patches[:, s:s + crop, s:s + crop]
    reference = physics.place(cropped, xy, obj.shape).sum(axis=0)
    reference_coverage = physics.place(np.ones(cropped.shape, np.float32), xy, obj.shape).sum(axis=0)
    np.testing.assert_allclose(coverage, reference_coverage, atol=1e-5)
    np.testing.assert_allclose(image * coverage, reference, atol=1e-5)


def test_stitch_groups_and_edges(obj):
    xy = scan(40).reshape(10, 4, 2)
    patches = physics.extract_patches(obj, xy[..., 0].ravel(), xy[..., 1].ravel(), N).reshape(10, 4, N, N)
    flat_image, _ = stitching.stitch(patches.reshape(-1, N, N), xy.reshape(-1, 2), obj.shape)
    group_image, _ = stitching.stitch(patches, xy, obj.shape)
    np.testing.assert_array_equal(flat_image, group_image)
    # Positions at and beyond the edges: the part outside the canvas is dropped, no error.
    edge = np.array([[0.0, 0.0], [obj.shape[1] - 0.5, obj.shape[0] - 0.5], [-100.0, 50.0]])
    image, coverage = stitching.stitch(np.ones((3, N, N), np.complex64), edge, obj.shape)
    assert coverage[0, 0] > 0 and coverage[-1, -1] > 0 and np.allclose(image[coverage > 1e-6], 1)
    with pytest.raises(ValueError, match="positions"):
        stitching.stitch(patches[0], xy[:3].reshape(-1, 2), obj.shape)
    with pytest.raises(ValueError, match="crop"):
        stitching.stitch(patches[0], xy[0], obj.shape, crop=N + 1)


# ----------------------------------------------------------------------------- metrics and alignment

def _scores(pred, gt, region=None, **kwargs):
    region = np.ones(gt.shape, bool) if region is None else region
    kwargs.setdefault("max_shift_px", 0.0)
    aligned = evaluation.align(pred, gt, region, **kwargs)
    return aligned, evaluation.metrics(aligned.pred_amp, aligned.gt_amp, aligned.pred_phase, aligned.gt_phase,
                                     aligned.mask)


def test_metrics_of_ground_truth_against_itself_are_perfect(obj):
    m = evaluation.metrics(np.abs(obj), np.abs(obj), np.angle(obj), np.angle(obj))
    _perfect(m)
    assert m["amplitude"]["mae"] == 0 and m["amplitude"]["ssim"] == pytest.approx(1.0)
    assert math.isinf(m["amplitude"]["psnr"])
    assert m["amplitude"]["frc50"] == min(obj.shape) // 2


def test_align_removes_phase_offset_plane_and_amplitude_scale(obj):
    yy, xx = np.mgrid[0:obj.shape[0], 0:obj.shape[1]]
    # A ramp of several radians across the object (it wraps), a global offset, amplitude ×2.
    ambiguity = 1.3 + 0.05 * xx - 0.03 * yy
    pred = 2.0 * obj * np.exp(1j * ambiguity)
    aligned, m = _scores(pred, obj)
    _perfect(m)
    assert aligned.amplitude_scale == pytest.approx(0.5, rel=1e-6)
    a, b, c = aligned.phase_plane
    assert (a, b) == (pytest.approx(0.05, abs=1e-6), pytest.approx(-0.03, abs=1e-6))
    assert c == pytest.approx(1.3, abs=1e-5)


def test_align_handles_wrapped_ground_truth_phase():
    gt = make_object(seed=4, phase_span=6.0)  # the phase itself crosses ±π
    pred = 0.7 * gt * np.exp(-2.5j)
    _, m = _scores(pred, gt)
    _perfect(m)


def test_align_crops_to_the_well_covered_region(obj):
    coverage = np.zeros(obj.shape)
    coverage[30:90, 40:150] = 1.0
    coverage[30:35, 40:45] = 0.2  # poorly covered corner: inside the box but not in the mask
    pred = np.where(coverage > 0, obj, 0)
    aligned, m = _scores(pred, obj, evaluation.scored_region(coverage))
    assert aligned.bbox == (30, 90, 40, 150)
    assert aligned.pred_amp.shape == (60, 110)
    assert not aligned.mask[:5, :5].any() and aligned.mask[5:, 5:].all()
    _perfect(m)


def test_noise_lowers_ssim_monotonically(obj):
    rng = np.random.default_rng(7)
    noise = rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape)
    results = []
    for sigma in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        _, m = _scores(obj + sigma * noise, obj)
        results.append(m)
    for part in ("amplitude", "phase"):
        ssim = [m[part]["ssim"] for m in results]
        psnr = [m[part]["psnr"] for m in results]
        mae = [m[part]["mae"] for m in results]
        frc = [m[part]["frc50"] for m in results]
        assert all(a > b for a, b in zip(ssim, ssim[1:])), (part, ssim)
        assert all(a > b for a, b in zip(psnr, psnr[1:])), (part, psnr)
        assert all(a < b for a, b in zip(mae, mae[1:])), (part, mae)
        assert all(a >= b for a, b in zip(frc, frc[1:])) and frc[-1] < frc[0], (part, frc)
        assert ssim[0] == pytest.approx(1.0, abs=1e-6) and ssim[-1] < 0.5


def test_psnr_uses_the_stated_data_range(obj):
    rng = np.random.default_rng(3)
    gt_amp, gt_phase = np.abs(obj).astype(np.float64), np.angle(obj).astype(np.float64)
    pred_amp = gt_amp + 0.01 * rng.normal(size=gt_amp.shape)
    pred_phase = gt_phase + 0.03 * rng.normal(size=gt_amp.shape)
    m = evaluation.metrics(pred_amp, gt_amp, pred_phase, gt_phase)
    for part, gt, pred in (("amplitude", gt_amp, pred_amp), ("phase", gt_phase, pred_phase)):
        data_range = gt.max() - gt.min()
        assert m[part]["data_range"] == pytest.approx(data_range)
        assert m["data_range"][part] == pytest.approx(data_range)
        mse = np.mean((pred - gt) ** 2)
        assert m[part]["mse"] == pytest.approx(mse)
        assert m[part]["mae"] == pytest.approx(np.mean(np.abs(pred - gt)))
        assert m[part]["psnr"] == pytest.approx(10 * np.log10(data_range ** 2 / mse))


def test_frc_curve():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(64, 80)), rng.normal(size=(64, 80))
    same = evaluation.frc_curve(a, a)
    assert len(same) == 33 and np.allclose(same, 1.0)
    independent = evaluation.frc_curve(a, b)
    assert evaluation.frc50(independent) <= 2
    assert evaluation.frc50(same) == 32


def test_registration_searches_only_a_few_pixels_and_removes_a_small_shift(obj):
    inner = np.zeros(obj.shape, bool)
    inner[20:-20, 20:-20] = True
    shifted = np.roll(obj, (1, -2), axis=(0, 1))  # reconstruction displaced by (dy, dx) = (1, −2)
    plain, m_plain = _scores(shifted, obj, inner, max_shift_px=0.0)
    assert plain.shift == (0.0, 0.0) and not plain.shift_applied
    registered, m_reg = _scores(shifted, obj, inner, max_shift_px=3.0)
    assert registered.shift == (pytest.approx(-1.0, abs=0.05), pytest.approx(2.0, abs=0.05))
    assert registered.shift_applied
    assert m_reg["amplitude"]["ssim"] > 0.999 > m_plain["amplitude"]["ssim"]
    # A sub-pixel shift is measured to a tenth of a pixel (parabolic peak refinement).
    subpixel = np.fft.ifft2(np.fft.fft2(obj) * np.exp(-2j * np.pi * (
        0.4 * np.fft.fftfreq(obj.shape[0])[:, None] + -0.7 * np.fft.fftfreq(obj.shape[1])[None, :])))
    measured = _scores(subpixel, obj, inner, max_shift_px=2.0)[0].shift
    assert measured == (pytest.approx(-0.4, abs=0.1), pytest.approx(0.7, abs=0.1))
    # A far displacement is never reported as a far jump: the search stays within its box.
    far = _scores(np.roll(obj, (23, -47), axis=(0, 1)), obj, inner, max_shift_px=2.0)[0]
    assert max(abs(v) for v in far.shift) <= 2.0


# ----------------------------------------------------------------------------- the whole evaluation

def test_evaluate_predictions_writes_files(obj, tmp_path):
    xy = scan(400, seed=2).reshape(100, 4, 2)
    patches = physics.extract_patches(obj, xy[..., 0].ravel(), xy[..., 1].ravel(), N).reshape(100, 4, N, N)
    # A constant offset and amplitude scale on every patch: removed by the alignment.
    prediction = (3.0 * patches * np.exp(0.4j)).astype(np.complex64)
    result = evaluation.evaluate_predictions(prediction, xy, obj, tmp_path)
    _perfect(result)
    assert result["n_patches"] == 400
    assert result["n_patterns"] == len(np.unique(xy.reshape(-1, 2), axis=0))
    assert result["stitch_crop"] == N // 2
    assert result["registration_shift"] == [pytest.approx(0.0, abs=0.05)] * 2
    assert result["amplitude_scale"] == pytest.approx(1 / 3, rel=1e-5)
    assert result["data_range"]["amplitude"] == result["amplitude"]["data_range"] > 0
    assert 0 < result["region"]["covered_fraction"] <= 1
    assert result["patchwise"]["amplitude_correlation"] == pytest.approx(1.0, abs=1e-5)
    assert result["patchwise"]["phase_correlation"] == pytest.approx(1.0, abs=1e-5)
    assert result["patchwise"]["n_patches"] == 400

    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["metrics.json", "reconstruction.npz", "reconstruction.png"]
    assert (tmp_path / "reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def no_constants(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    stored = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_constants)
    assert stored["amplitude"]["ssim"] == pytest.approx(result["amplitude"]["ssim"])
    assert stored["amplitude"]["psnr"] is None or stored["amplitude"]["psnr"] > 90
    assert len(stored["frc_curves"]["phase"]) == result["phase"]["frc_nyquist_index"] + 1
    with np.load(tmp_path / "reconstruction.npz", allow_pickle=False) as data:
        assert data["image"].shape == obj.shape and data["image"].dtype == np.complex64
        assert data["coverage"].shape == obj.shape


def test_patchwise_correlation_ignores_each_patch_constant_phase(obj, tmp_path):
    """A random constant phase per patch (invisible in the far field) ruins the stitched phase but
    not the per-patch score; noise lowers it; a wrong patch scores about 0."""
    rng = np.random.default_rng(5)
    xy = scan(300, seed=3)
    truth = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
    offsets = np.exp(1j * rng.uniform(-np.pi, np.pi, (len(xy), 1, 1)))
    shifted = evaluation.patchwise_correlation(truth * offsets, truth, N // 2)
    assert shifted["amplitude_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert shifted["phase_correlation"] == pytest.approx(1.0, abs=1e-6)
    # Averaged as they are, patches with disagreeing offsets ruin the stitched phase ...
    raw, coverage = stitching.stitch(truth * offsets, xy, obj.shape, synchronise=False, iterations=0)
    _, m_raw = evaluation.score_image(raw, coverage, obj, max_shift_px=0.0)
    assert m_raw["phase"]["ssim"] < 0.5
    # ... the stitch's phase synchronisation (from the overlaps alone) restores it.
    stitched = evaluation.evaluate_predictions(truth * offsets, xy, obj, tmp_path)
    assert stitched["phase"]["ssim"] > 0.999 and stitched["patchwise"]["phase_correlation"] > 0.999

    noisy = truth * np.exp(0.3j * rng.normal(size=truth.shape))
    assert 0.2 < evaluation.patchwise_correlation(noisy, truth, N // 2)["phase_correlation"] < 0.95
    unrelated = evaluation.patchwise_correlation(truth[::-1], truth, N // 2)
    assert abs(unrelated["phase_correlation"]) < 0.1 and abs(unrelated["amplitude_correlation"]) < 0.1
    with pytest.raises(ValueError, match="must both be"):
        evaluation.patchwise_correlation(truth[:3], truth, N // 2)


def test_a_flat_output_on_every_patch_is_named_a_collapse(obj):
    """The collapsed generator seen in a supervised run: one constant phase on every patch (float32
    round-off only) while the amplitude still varies."""
    xy = scan(60, seed=4)
    truth = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N).astype(np.complex64)
    rng = np.random.default_rng(2)
    dead_phase = (np.abs(truth) * np.exp(-0.449j + 1e-8j * rng.normal(size=truth.shape))).astype(np.complex64)
    scores = evaluation.patchwise_correlation(dead_phase, truth, N // 2)
    assert scores["flat_phase_fraction"] == 1.0 and scores["flat_amplitude_fraction"] == 0.0
    assert abs(scores["phase_correlation"]) < 0.1
    warning = evaluation.collapse_warning(scores)
    assert "phase output is flat on every test patch" in warning and "amplitude" not in warning.split(":")[0]
    flat_amplitude = np.full_like(truth, 0.7)
    both = evaluation.collapse_warning(evaluation.patchwise_correlation(flat_amplitude, truth, N // 2))
    assert "amplitude and phase output is flat" in both
    # the truth, or one flat patch among many, is no collapse
    right = evaluation.patchwise_correlation(truth, truth, N // 2)
    assert right["flat_phase_fraction"] == right["flat_amplitude_fraction"] == 0.0
    assert evaluation.collapse_warning(right) is None
    one_flat = truth.copy()
    one_flat[0] = 0.7
    partly = evaluation.patchwise_correlation(one_flat, truth, N // 2)
    assert partly["flat_phase_fraction"] == pytest.approx(1 / 60) and evaluation.collapse_warning(partly) is None
    # the chunked form over an object gives the same fractions
    against = evaluation.patchwise_against_object(dead_phase, xy, obj, N // 2)
    assert against["flat_phase_fraction"] == 1.0


def test_evaluate_predictions_sparse_scan_with_holes(obj, tmp_path):
    # Positions 20 px apart on a grid, stitched with 12 px crops: holes between the crops.
    xs, ys = np.meshgrid(np.arange(30, 160, 20.0), np.arange(30, 130, 20.0))
    xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
    patches = physics.extract_patches(obj, xy[:, 0], xy[:, 1], N)
    result = evaluation.evaluate_predictions(patches, xy, obj, tmp_path, crop=12)
    assert result["region"]["covered_fraction"] < 0.5
    _perfect(result)


def test_evaluate_predictions_rejects_mismatched_inputs(obj, tmp_path):
    with pytest.raises(ValueError, match="positions"):
        evaluation.evaluate_predictions(np.zeros((5, 4, N, N), np.complex64), np.zeros((5, 2)), obj, tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        evaluation.evaluate_predictions(np.full((2, N, N), np.nan, np.complex64), np.full((2, 2), 50.0), obj, tmp_path)
    with pytest.raises(ValueError, match="no pixel"):
        evaluation.evaluate_predictions(np.zeros((2, N, N), np.complex64), np.full((2, 2), -500.0), obj, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_reconstruction_is_atomic(tmp_path):
    image = np.ones((8, 9), np.complex128) * (1 + 2j)
    path = evaluation.save_reconstruction(tmp_path / "r.npz", image, np.ones((8, 9)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]
    with np.load(path) as data:
        np.testing.assert_array_equal(data["image"], image.astype(np.complex64))


def test_modules_import_no_framework():
    code = ("import sys, fly64_train.bundle, fly64_train.evaluation; "
            "bad = [m for m in ('tensorflow', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- the study's object

@pytest.fixture(scope="module")
def dense_scene():
    """The default picture object (small), the fly64-like probe and a dense view of a fly scan."""
    n = 64
    picture = simulate.make_object(320, seed=0)
    probe = simulate.make_probe(n)
    x, y = simulate.fly_scan_positions(picture.shape, n, 3.0, 4.8, 0.5, seed=3)
    keep = spaced_subset(x, y, study.VIEWS["dense"].spacing(physics.footprint_diameter(probe)), 456)
    return picture, probe, np.stack([x[keep], y[keep]], axis=1)


def test_metric_ranks_perfect_above_blurred_above_flat(dense_scene, tmp_path):
    """On the study's object, lit region, dense view (measured: perfect 0.992 / 0.999, blurred by
    σ = 2 px 0.56 / 0.74, flat 0.49 / 0.11 in amplitude / phase SSIM; phase in the original's
    convention 1.00, 0.83, 0.51)."""
    picture, probe, xy = dense_scene
    n = probe.shape[0]

    def score(obj_seen, name):
        patches = physics.extract_patches(obj_seen.astype(np.complex64), xy[:, 0], xy[:, 1], n)
        return evaluation.evaluate_predictions(patches, xy, picture, tmp_path / name, probe=probe)

    blurred = gaussian_filter(picture.real, 2.0) + 1j * gaussian_filter(picture.imag, 2.0)
    perfect, blur = score(picture, "perfect"), score(blurred, "blur")
    flat = score(np.full(picture.shape, np.abs(picture).mean()), "flat")
    for part in ("amplitude", "phase"):
        assert perfect[part]["ssim"] >= 0.99 and perfect[part]["ssim_original"] >= 0.99, part
        assert blur[part]["ssim"] < perfect[part]["ssim"] - 0.2, part
        assert blur[part]["ssim_original"] < perfect[part]["ssim_original"] - 0.1, part
        assert flat[part]["ssim"] < blur[part]["ssim"] and flat[part]["ssim_original"] < blur[part]["ssim_original"]
    assert flat["amplitude"]["ssim"] < 0.55 and flat["phase"]["ssim"] < 0.2
    assert perfect["illumination_threshold"] == 0.1
    assert perfect["registration"]["max_shift_px"] == 2.0 and not perfect["registration"]["applied"]
    with np.load(tmp_path / "perfect" / "reconstruction.npz") as data:
        lit = data["illumination"]
    assert perfect["region"]["scored_pixels"] <= int((lit >= 0.1 * lit.max()).sum())


def test_only_the_illuminated_region_is_scored(dense_scene):
    picture, probe, xy = dense_scene
    lit = stitching.illumination(probe, xy, picture.shape)
    intensity = (np.abs(probe) ** 2).astype(np.float32)
    reference = physics.place(np.broadcast_to(intensity, (len(xy),) + intensity.shape), xy, picture.shape).sum(axis=0)
    np.testing.assert_allclose(lit, reference, rtol=1e-5, atol=1e-6 * reference.max())
    coverage = np.ones(picture.shape)
    region = evaluation.scored_region(coverage, lit, illumination_threshold=0.1)
    np.testing.assert_array_equal(region, lit >= 0.1 * lit.max())
    stricter = evaluation.scored_region(coverage, lit, illumination_threshold=0.5)
    assert stricter.sum() < region.sum() < picture.size  # the unlit border is not scored
    # A wrong reconstruction outside the lit region does not change the score.
    wrong_outside = np.where(region, picture, 0.3)
    _, inside_only = evaluation.score_image(wrong_outside, coverage, picture, lit, max_shift_px=0.0)
    assert inside_only["amplitude"]["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_least_squares_stitch_removes_the_subpixel_blur(dense_scene):
    """Patches at jittered sub-pixel positions are bilinear samples of the object: their plain
    average blurs it by about half a pixel; the least-squares refinement restores the detail."""
    picture, probe, xy = dense_scene
    patches = physics.extract_patches(picture, xy[:, 0], xy[:, 1], probe.shape[0])
    scores = {}
    for iterations in (0, stitching.STITCH_ITERATIONS):
        image, coverage = stitching.stitch(patches, xy, picture.shape, iterations=iterations)
        scores[iterations] = evaluation.score_image(image, coverage, picture, max_shift_px=0.0)[1]["amplitude"]["ssim"]
    assert scores[0] < 0.97 and scores[stitching.STITCH_ITERATIONS] > 0.99, scores


def test_phase_offsets_are_recovered_from_the_overlaps_alone(dense_scene):
    picture, probe, xy = dense_scene
    patches = physics.extract_patches(picture, xy[:, 0], xy[:, 1], probe.shape[0])
    offsets = np.exp(1j * np.random.default_rng(8).uniform(-np.pi, np.pi, len(xy)))
    u = stitching.phase_offsets(patches * offsets[:, None, None], xy, np.abs(probe) ** 2)
    assert np.allclose(np.abs(u), 1.0)
    residual = np.angle(u * offsets)
    residual = np.angle(np.exp(1j * (residual - np.angle(np.mean(np.exp(1j * residual))))))
    assert np.abs(residual).max() < 0.05  # one global phase remains, as physics allows
    # patches that overlap nothing keep their phase; two disjoint islands are each consistent
    far = np.array([[0.0, 0.0], [500.0, 500.0]])
    np.testing.assert_array_equal(stitching.phase_offsets(patches[:2], far), [1.0, 1.0])


def test_figures_veil_the_unscored_pixels_instead_of_blanking_them():
    # a sparse scan's scored region is patchy: what lies outside it stays visible, only paler
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fly64_train.evaluation.report import show_scored

    image = np.zeros((20, 20))
    image[:, 10:] = 1.0  # dark left half, bright right half
    mask = np.zeros((20, 20), bool)
    mask[:10] = True  # top half scored
    fig = Figure(figsize=(2, 2), dpi=20)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    show_scored(ax, image, mask, cmap="gray", vmin=0, vmax=1)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype(float).mean(axis=-1)
    top_dark, bottom_dark = rgb[5, 5], rgb[35, 5]
    top_bright, bottom_bright = rgb[5, 35], rgb[35, 35]
    assert top_dark < 10 and top_bright > 245  # scored: the image itself
    assert 40 < bottom_dark < 200  # unscored dark: veiled, not white
    assert bottom_bright > 245 and bottom_dark < bottom_bright  # the content still shows through
    ax.clear()
    ax.set_axis_off()
    show_scored(ax, image, mask, veil=0.0, cmap="gray", vmin=0, vmax=1)
    canvas.draw()
    assert np.asarray(canvas.buffer_rgba())[35, 5, :3].mean() < 10  # veil 0: drawn as it is


def test_each_scan_position_is_lit_once_however_its_members_were_computed():
    from fly64_train.evaluation.scoring import scan_positions

    exact = np.array([[10.25, 20.5], [40.0, 20.5], [70.125, 33.0]])
    recomputed = (exact.mean(axis=0) + (exact - exact.mean(axis=0)).astype(np.float32)).astype(np.float64)
    assert not np.array_equal(recomputed, exact)  # float32 offsets move the last digits
    found = scan_positions(np.concatenate([exact, recomputed, exact[:1]]))
    np.testing.assert_allclose(found, exact, atol=1e-3)
