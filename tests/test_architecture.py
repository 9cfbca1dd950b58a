"""The framework-free network spec: parameter layout per member encoding, the canvas weight map, the
initial weights every backend starts from, and the ModelSpec backends are built from."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fly64_train import architecture


def geometry(gridsize: int, encoding: str, object_big: bool = True, N: int = 64) -> architecture.Geometry:
    return architecture.Geometry(N=N, gridsize=gridsize, n_filters_scale=2, object_big=object_big, probe_big=True,
                                 amp_activation="sigmoid", padded_size=N + 16, member_encoding=encoding)


def n_parameters(g: architecture.Geometry) -> int:
    return sum(int(np.prod(shape)) for name, shape in g.parameter_shapes().items() if name != "probe")


def test_shared_members_use_the_single_pattern_network():
    single, shared, stacked = geometry(1, "shared"), geometry(2, "shared"), geometry(2, "stacked")
    assert shared.shared_members and not stacked.shared_members and not single.shared_members
    assert shared.parameter_shapes() == single.parameter_shapes()
    assert n_parameters(single) == 2_331_773  # the reference's size at N = 64, n_filters_scale 2
    differing = {name for name, shape in stacked.parameter_shapes().items()
                 if shape != single.parameter_shapes()[name]}
    # stacking changes only the input channels of the first conv and the heads' output channels
    assert differing == {"encoder/block0/conv0/kernel", "decoder_amp/head/kernel", "decoder_amp/head/bias",
                         "decoder_phase/head/kernel", "decoder_phase/head/bias",
                         "decoder_amp/border/out/kernel", "decoder_amp/border/out/bias",
                         "decoder_phase/border/out/kernel", "decoder_phase/border/out/bias"}
    assert stacked.parameter_shapes()["encoder/block0/conv0/kernel"] == (3, 3, 4, 64)
    assert stacked.parameter_shapes()["decoder_amp/head/bias"] == (4,)
    assert shared.object_channels == stacked.object_channels == 4


def test_full_head_adds_a_block_to_N_and_drops_the_border_path():
    padded = geometry(1, "shared")
    full = dataclasses.replace(padded, pad_object=False)
    shapes = full.parameter_shapes()
    assert not full.border_path and padded.border_path
    assert not any("/border/" in name for name in shapes)
    # one more Conv_Up block (16f = 32 filters at n_filters_scale 2), the head reads all its channels
    assert shapes["decoder_amp/block2/conv0/kernel"] == (3, 3, 64, 32)
    assert shapes["decoder_phase/block2/conv1/kernel"] == (3, 3, 32, 32)
    assert shapes["decoder_amp/head/kernel"] == (3, 3, 32, 1)
    assert padded.parameter_shapes()["decoder_amp/head/kernel"] == (3, 3, 60, 1)
    # the full head writes every pixel, so the canvas is a plain mean of the members
    assert np.all(full.canvas_weight() == 1.0)
    assert full.canvas_border_weight == 1.0 and padded.canvas_border_weight == architecture.CANVAS_BORDER_WEIGHT
    assert architecture.Geometry.from_dict(full.to_dict()) == full


def test_member_encoding_errors_and_old_params_default_to_stacked():
    with pytest.raises(ValueError, match="member_encoding='mixed'"):
        geometry(2, "mixed")
    with pytest.raises(ValueError, match="object_big=True"):
        geometry(2, "shared", object_big=False)
    assert geometry(2, "stacked", object_big=False).object_channels == 1
    recorded = {"N": 64, "gridsize": 2, "n_filters_scale": 2, "object_big": True, "probe_big": True,
                "amp_activation": "sigmoid", "padded_size": 80}  # a bundle's geometry from before the option
    assert architecture.Geometry.from_dict(recorded).member_encoding == "stacked"
    assert architecture.Geometry.from_dict(recorded).pad_object  # and the padded head
    assert architecture.Geometry.from_dict({**recorded, "member_encoding": "shared"}).shared_members
    assert architecture.Geometry.from_dict(geometry(2, "shared").to_dict()) == geometry(2, "shared")


def test_canvas_weight_is_one_on_the_head_square_and_small_outside():
    w = architecture.canvas_weight(64)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert (w[16:48, 16:48] == 1).all()
    border = np.ones((64, 64), bool)
    border[16:48, 16:48] = False
    assert np.allclose(w[border], architecture.CANVAS_BORDER_WEIGHT)
    np.testing.assert_array_equal(geometry(2, "shared").canvas_weight(), w)
    # the head writes exactly where the weight is 1 (border_mask is its complement)
    np.testing.assert_array_equal(geometry(2, "shared").border_mask() == 0, w == 1)


def test_initial_weights_are_seeded_glorot_uniform_in_architecture_order():
    g = geometry(2, "stacked")
    probe = np.full((64, 64), 0.5 + 0.25j, np.complex64)
    weights = architecture.initial_weights(g, seed=5, intensity_scale=2.0, probe=probe)
    assert list(weights) == list(g.parameter_shapes())
    for conv in g.convs():
        limit = np.sqrt(6.0 / (9 * conv.in_channels + 9 * conv.out_channels))
        kernel = weights[f"{conv.name}/kernel"]
        assert kernel.dtype == np.float32 and kernel.shape == (3, 3, conv.in_channels, conv.out_channels)
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
        assert abs(float(kernel.mean())) < 0.1 * limit  # centred
        assert not weights[f"{conv.name}/bias"].any()
    assert weights["log_scale"] == np.float32(np.log(2.0)) and weights["log_scale"].shape == ()
    np.testing.assert_array_equal(weights["probe"], probe)
    again = architecture.initial_weights(g, seed=5, intensity_scale=2.0, probe=probe)
    assert all(again[k].tobytes() == v.tobytes() for k, v in weights.items())
    other = architecture.initial_weights(g, seed=6, intensity_scale=2.0, probe=probe)
    assert not np.array_equal(other["encoder/block0/conv0/kernel"], weights["encoder/block0/conv0/kernel"])
    with pytest.raises(ValueError, match="intensity_scale"):
        architecture.initial_weights(g, seed=5, intensity_scale=0.0, probe=probe)


def test_geometry_rejects_what_the_architecture_does_not_cover():
    with pytest.raises(ValueError, match="N=96"):
        geometry(2, "shared", N=96)
    with pytest.raises(ValueError, match="amp_activation='tanh'"):
        architecture.Geometry(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True,
                              amp_activation="tanh", padded_size=64)
    with pytest.raises(ValueError, match="padded_size=32"):
        architecture.Geometry(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True,
                              amp_activation="sigmoid", padded_size=32)


def test_er_iterations_residual_and_solver_need_the_er_transform_and_round_trip_through_the_manifest():
    base = dict(N=64, gridsize=2, n_filters_scale=1, object_big=True, probe_big=True, amp_activation="sigmoid",
                padded_size=80, member_encoding="shared", pad_object=False)
    with pytest.raises(ValueError, match="er_iterations=5 needs input_transform='er'"):
        architecture.Geometry(**base, input_transform="backprop", er_iterations=5)
    with pytest.raises(ValueError, match="er_iterations=0"):
        architecture.Geometry(**base, input_transform="er", er_iterations=0)
    with pytest.raises(ValueError, match="amp_activation='sigmoid'"):
        architecture.Geometry(**{**base, "amp_activation": "swish"}, input_transform="er", er_residual=True)
    with pytest.raises(ValueError, match="er_solver='raar' needs input_transform='er'"):
        architecture.Geometry(**base, input_transform="backprop", er_solver="raar")
    with pytest.raises(ValueError, match="er_solver='hio'; expected one of er, raar"):
        architecture.Geometry(**base, input_transform="er", er_solver="hio")
    with pytest.raises(ValueError, match="er_tolerance=1.0 widens .* er_iterations > 1"):
        architecture.Geometry(**base, input_transform="er", er_tolerance=1.0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="expected a finite number ≥ 0"):
            architecture.Geometry(**base, input_transform="er", er_iterations=5, er_tolerance=bad)
    g = architecture.Geometry(**base, input_transform="er", er_iterations=100, er_residual=True, er_solver="raar",
                              er_tolerance=1.0)
    assert architecture.Geometry.from_dict(g.to_dict()) == g
    # a manifest written before these fields loads as one exact error-reduction step without the residual heads
    old = {k: v for k, v in g.to_dict().items()
           if k not in ("er_iterations", "er_residual", "er_solver", "er_tolerance")}
    loaded = architecture.Geometry.from_dict(old)
    assert (loaded.er_iterations, loaded.er_residual, loaded.er_solver, loaded.er_tolerance) == (1, False, "er", 0.0)


# ---------------------------------------------------------------------------------------------
# The ffno generator's description

def ffno(gridsize: int = 1, encoding: str = "shared", N: int = 64, **fields) -> architecture.Geometry:
    return architecture.Geometry(N=N, gridsize=gridsize, n_filters_scale=2, object_big=True, probe_big=True,
                                 amp_activation="sigmoid", padded_size=N + 16, member_encoding=encoding,
                                 pad_object=False, generator="ffno", **fields)


def test_ffno_layout_is_the_reference_operator():
    g = ffno()
    shapes = g.parameter_shapes()
    assert g.ffno_modes == 12 and ffno(N=128).ffno_modes == 12 and ffno(N=64, ffno_modes=None).ffno_modes == 12
    assert shapes["ffno/lift/conv0/kernel"] == (3, 3, 1, 32) and shapes["ffno/lift/conv1/kernel"] == (3, 3, 32, 32)
    # ONE spectral convolution (x and y factors) shared by the 4 blocks: complex (in, out, mode) as (…, 2)
    assert [n for n in shapes if "spectral" in n] == ["ffno/spectral/x", "ffno/spectral/y"]
    assert shapes["ffno/spectral/x"] == (32, 32, 12, 2)
    assert [n for n in shapes if n.endswith("mlp0/kernel")] == [f"ffno/block{i}/mlp0/kernel" for i in range(4)]
    assert shapes["ffno/block3/mlp0/kernel"] == (1, 1, 32, 64) and shapes["ffno/block3/mlp1/kernel"] == (1, 1, 64, 32)
    assert shapes["ffno/refine1/conv1/kernel"] == (3, 3, 32, 32) and "ffno/refine2/conv0/kernel" not in shapes
    assert shapes["ffno/head_amp/kernel"] == (1, 1, 32, 1) and shapes["ffno/gate"] == ()
    assert 100_000 < n_parameters(g) < 120_000  # ~0.1 M at w = 32 (reference §10)
    # members: shared folds them into the batch (the single-pattern operator); stacked reads C channels
    assert ffno(2, "shared").parameter_shapes() == shapes
    stacked = ffno(2, "stacked").parameter_shapes()
    assert stacked["ffno/lift/conv0/kernel"] == (3, 3, 4, 32) and stacked["ffno/head_phase/bias"] == (4,)
    # every generator writes the whole patch: a plain canvas mean
    assert g.canvas_border_weight == 1.0
    assert architecture.Geometry.from_dict(g.to_dict()) == g
    assert architecture.Geometry.from_dict(geometry(1, "shared").to_dict()).generator == "cnn"
    assert "ffno_width" not in geometry(1, "shared").to_dict()


def test_ffno_initial_weights():
    g = ffno(ffno_width=8, ffno_modes=4)
    weights = architecture.initial_weights(g, seed=1, intensity_scale=1.0, probe=np.ones((64, 64), np.complex64))
    assert list(weights) == list(g.parameter_shapes())
    assert weights["ffno/gate"] == np.float32(architecture.FFNO_GATE_INIT)
    spectral = np.concatenate([weights["ffno/spectral/x"].ravel(), weights["ffno/spectral/y"].ravel()])
    assert spectral.std() == pytest.approx(np.sqrt(1 / (4 * 16)), rel=0.1)  # Xavier-normal of the mixing
    assert weights["ffno/refine0/conv0/kernel"].std() == pytest.approx(np.sqrt(6 / (9 * 16)) / np.sqrt(3), rel=0.1)
    assert not weights["ffno/head_amp/bias"].any()
    again = architecture.initial_weights(g, seed=1, intensity_scale=1.0, probe=np.ones((64, 64), np.complex64))
    assert all(again[k].tobytes() == v.tobytes() for k, v in weights.items())


def test_ffno_errors():
    with pytest.raises(ValueError, match="needs pad_object=False"):
        architecture.Geometry(N=64, gridsize=1, n_filters_scale=1, object_big=True, probe_big=True,
                              amp_activation="sigmoid", padded_size=64, generator="ffno")
    with pytest.raises(ValueError, match="ffno_modes=33: expected 1 to N/2 = 32"):
        ffno(ffno_modes=33)
    with pytest.raises(ValueError, match="generator='resnet' is not a generator; expected one of cnn, ffno, unet"):
        geometry(1, "shared").__class__(**{**geometry(1, "shared").to_dict(), "generator": "resnet"})


def unet(gridsize: int = 1, encoding: str = "shared", N: int = 64, **fields) -> architecture.Geometry:
    return architecture.Geometry(N=N, gridsize=gridsize, n_filters_scale=2, object_big=True, probe_big=True,
                                 amp_activation="sigmoid", padded_size=N + 16, member_encoding=encoding,
                                 pad_object=False, generator="unet", **fields)


def test_unet_layout_doubles_channels_per_level_and_concatenates_the_skips():
    g = unet(input_transform="er")  # 3 input channels: h, re d, im d
    shapes = g.parameter_shapes()
    w = architecture.UNET_WIDTH
    # encoder w, 2w, 4w; the bottleneck keeps 4w; each decoder block reads the upsampled channels and
    # the skip of its level (2·w·2^i) and halves towards w
    assert shapes["unet/encoder0/conv0/kernel"] == (3, 3, 3, w)
    assert shapes["unet/encoder2/conv1/kernel"] == (3, 3, 4 * w, 4 * w)
    assert shapes["unet/bottleneck/conv0/kernel"] == (3, 3, 4 * w, 4 * w)
    assert shapes["unet/decoder2/conv0/kernel"] == (3, 3, 8 * w, 2 * w)
    assert shapes["unet/decoder1/conv0/kernel"] == (3, 3, 4 * w, w)
    assert shapes["unet/decoder0/conv0/kernel"] == (3, 3, 2 * w, w)
    assert shapes["unet/head_amp/kernel"] == (1, 1, w, 1) and shapes["unet/head_phase/bias"] == (1,)
    assert [n for n in shapes if n.startswith("unet/decoder")][0] == "unet/decoder2/conv0/kernel"  # deepest first
    assert unet(2, "shared", input_transform="er").parameter_shapes() == shapes
    stacked = unet(2, "stacked").parameter_shapes()
    assert stacked["unet/encoder0/conv0/kernel"] == (3, 3, 4, w) and stacked["unet/head_amp/bias"] == (4,)
    assert 200_000 < n_parameters(g) < 220_000 and n_parameters(unet(unet_width=32)) > 3.9 * n_parameters(g)
    assert g.canvas_border_weight == 1.0
    assert architecture.Geometry.from_dict(g.to_dict()) == g and g.to_dict()["unet_width"] == w
    with pytest.raises(ValueError, match="unet generator writes the whole N×N patch: needs pad_object=False"):
        architecture.Geometry(**{**g.to_dict(), "pad_object": True})
    with pytest.raises(ValueError, match="unet_width=0 must be positive"):
        unet(unet_width=0)


def test_unet_heads_start_near_zero():
    """Glorot convolutions, but heads at UNET_HEAD_SCALE of Glorot: with er_residual the generator starts
    at the group's estimate (2·σ(≈0) ≈ 1, phase ≈ 0 added)."""
    g = unet(unet_width=8)
    weights = architecture.initial_weights(g, seed=3, intensity_scale=1.0, probe=np.ones((64, 64), np.complex64))
    assert list(weights) == list(g.parameter_shapes())
    glorot = np.sqrt(6 / (9 * (8 + 8)))
    assert weights["unet/decoder0/conv1/kernel"].std() == pytest.approx(glorot / np.sqrt(3), rel=0.15)
    head_limit = architecture.UNET_HEAD_SCALE * np.sqrt(6 / (8 + 1))
    assert 0 < np.abs(weights["unet/head_amp/kernel"]).max() <= head_limit
    assert not weights["unet/head_phase/bias"].any()


def test_spectral_basis_is_the_truncated_rfft_pair():
    n, modes = 64, 12
    fc, fs, ic, is_ = architecture.spectral_basis(n, modes)
    v = np.random.default_rng(0).normal(size=(5, n))
    spectrum = np.fft.rfft(v)
    np.testing.assert_allclose(v @ fc + 1j * (v @ fs), spectrum[:, :modes], atol=1e-5)
    kept = spectrum.copy()
    kept[:, modes:] = 0
    np.testing.assert_allclose((v @ fc) @ ic + (v @ fs) @ is_, np.fft.irfft(kept, n=n), atol=1e-5)
    with pytest.raises(ValueError, match="modes=33"):
        architecture.spectral_basis(n, 33)


def test_every_backend_has_one_module_per_generator():
    """The one list (architecture.GENERATORS) is what each backend builds from: backends/<b>/generators/<name>.py."""
    import ast
    from pathlib import Path

    from fly64_train.backends import registry

    backends = Path(architecture.__file__).parent / "backends"
    for entry in registry.BACKENDS.values():
        package = backends / entry.target.split(":")[0].split(".")[-1] / "generators"
        modules = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
        assert modules == set(architecture.GENERATORS), (entry.name, modules)
        for name in modules:
            classes = {node.name for node in ast.walk(ast.parse((package / f"{name}.py").read_text()))
                       if isinstance(node, ast.ClassDef)}
            assert "Generator" in classes, f"{entry.name}/generators/{name}.py defines no Generator"


@pytest.mark.parametrize("dose,N,expected", [(1e3, 64, 0.9882), (1e4, 64, 3.125), (1e5, 128, 4.9411)])
def test_intensity_scale_matches_the_reference_values(dose, N, expected):
    assert architecture.intensity_scale(dose, N) == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# The ModelSpec (backends/base.py: framework-free; built by specs.py)

def test_spec_from_config_is_the_one_translation_of_the_config():
    from fly64_train.specs import spec_from_config
    from tests.conftest import compose_config
    from fly64_train.config import validate

    cfg = validate(compose_config("view=sparse", "dose=1e4", "trainer.learning_rate=5e-4", "trainer.mae_weight=0.5",
                                  "model.probe_trainable=true", "model.amp_activation=swish", "seed=9"))
    probe = np.ones((64, 64), np.complex64)
    spec = spec_from_config(cfg, padded_size=80, probe=probe)
    assert spec.geometry == architecture.Geometry(N=64, gridsize=2, n_filters_scale=1, object_big=True,
                                                  probe_big=True, amp_activation="swish", padded_size=80,
                                                  member_encoding="shared", pad_object=False,
                                                  input_transform="backprop")  # the train preset's
    assert type(spec.geometry.amp_activation) is str and type(spec.geometry.member_encoding) is str
    t = spec.training
    assert (t.learning_rate, t.nll_weight, t.mae_weight, t.probe_trainable, t.intensity_scale_trainable, t.compile) \
        == (5e-4, 1.0, 0.5, True, True, True)
    assert spec.intensity_scale == architecture.intensity_scale(1e4, 64) and spec.seed == 9
    assert spec.probe.dtype == np.complex64 and not spec.probe.flags.writeable
    probe[0, 0] = 7  # the spec holds its own copy
    assert spec.probe[0, 0] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3


def test_spec_from_a_bundle_manifest_old_and_new():
    from fly64_train.specs import spec_from_bundle
    from fly64_train.config import TrainingConfig, to_dict, validate

    content = {"geometry": {"N": 64, "gridsize": 2, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                            "amp_activation": "sigmoid", "padded_size": 78},  # before member_encoding
               "config": to_dict(validate(TrainingConfig())), "intensity_scale": 0.9882}
    spec = spec_from_bundle(content, seed=3, compile=False)
    assert spec.geometry.member_encoding == "stacked" and spec.geometry.padded_size == 78
    assert spec.intensity_scale == 0.9882 and spec.training.compile is False


@pytest.mark.parametrize("change,message", [
    (dict(probe=np.ones((32, 32), np.complex64)), r"shape \(64, 64\)"),
    (dict(probe=np.full((64, 64), np.nan, np.complex64)), "NaN"),
    (dict(intensity_scale=0.0), "intensity_scale must be positive")])
def test_spec_errors(change, message):
    from fly64_train.backends.base import ModelSpec
    from fly64_train.config import TrainingConfig
    from fly64_train.specs import training_settings

    settings = training_settings(TrainingConfig(), compile=False)
    values = dict(geometry=geometry(1, "shared"), training=settings, probe=np.ones((64, 64), np.complex64),
                  intensity_scale=1.0, seed=0)
    with pytest.raises(ValueError, match=message):
        ModelSpec(**{**values, **change})
    with pytest.raises(ValueError, match="both 0"):
        dataclasses.replace(settings, nll_weight=0.0, mae_weight=0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        dataclasses.replace(settings, learning_rate=0.0)
