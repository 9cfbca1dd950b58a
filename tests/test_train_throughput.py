"""benchmarks/train_throughput.py's analytic FLOP count against torch's own count of the same forward pass."""
from __future__ import annotations

import pytest

from tests.backend_support import GENERATOR_FIELDS, make_spec
from tests.conftest import load_benchmark

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("generator,gridsize", [("cnn", 1), ("unet", 1), ("unet", 2)])
def test_conv_flops_match_torch_flop_counter(generator, gridsize):
    """Every convolution of the generator, at its own resolution, counted once per member: the script's
    formula equals torch.utils.flop_counter on the torch generator (which counts convolutions and
    matrix products only: the cnn and unet have no matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fly64_train.backends.pytorch.generators import build

    throughput = load_benchmark("train_throughput")
    fields = {**GENERATOR_FIELDS[generator], "unet_width": 8} if generator == "unet" else {"pad_object": False}
    geometry = make_spec(gridsize, n_filters_scale=1, **fields).geometry
    generator_module = build(geometry, torch.contiguous_format)
    members = geometry.channels if geometry.shared_members else 1
    x = torch.zeros(members, geometry.network_in_channels, geometry.N, geometry.N)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator_module(x, torch.ones(()))
    assert throughput.conv_flops(geometry)["forward_per_group"] == counter.get_total_flops()
