"""The framework-free network spec: parameter layout per member encoding, the canvas weight map."""
from __future__ import annotations

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


def test_member_encoding_errors_and_old_params_default_to_stacked():
    with pytest.raises(ValueError, match="member_encoding='mixed'"):
        geometry(2, "mixed")
    with pytest.raises(ValueError, match="object_big=True"):
        geometry(2, "shared", object_big=False)
    assert geometry(2, "stacked", object_big=False).object_channels == 1
    params = {"N": 64, "gridsize": 2, "n_filters_scale": 2, "object.big": True, "probe.big": True,
              "amp_activation": "sigmoid", "padded_size": 80}  # a bundle written before the option
    assert architecture.geometry_from_params(params).member_encoding == "stacked"
    assert architecture.geometry_from_params({**params, "member_encoding": "shared"}).shared_members


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
