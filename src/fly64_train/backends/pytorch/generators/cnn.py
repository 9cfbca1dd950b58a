"""The cnn generator in torch: the reference's encoder-decoder (architecture.py, 'cnn')."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fly64_train.architecture import BORDER_CHANNELS, Conv, Geometry
from fly64_train.backends.pytorch.generators import conv_modules, module_key
from fly64_train.backends.pytorch.model import AMP_ACTIVATIONS, upsampled_conv3x3


def _pi_tanh(x: torch.Tensor) -> torch.Tensor:
    return math.pi * torch.tanh(x)


class Generator(nn.Module):
    def __init__(self, geometry: Geometry, memory_format: torch.memory_format):
        super().__init__()
        self.geometry = geometry
        self.memory_format = memory_format
        self.convs, self._tensors = conv_modules(geometry.convs())
        self.encoder_blocks = [[module_key(c.name) for c in block] for block in geometry.encoder()]
        self.decoders = {}
        for branch in ("amp", "phase"):
            layers = geometry.decoder(branch)
            self.decoders[branch] = {
                "blocks": [[module_key(c.name) for c in block] for block in layers["blocks"]],
                "head": module_key(layers["head"].name),
                "border_block": [module_key(c.name) for c in layers.get("border_block", [])],
                "border_out": module_key(layers["border_out"].name) if geometry.border_path else None,
            }
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]
        self.register_buffer("border_mask", torch.from_numpy(geometry.border_mask()), persistent=False)
        self.to(memory_format=memory_format)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def named_conv(self, conv: Conv) -> nn.Conv2d:
        return self.convs[module_key(conv.name)]

    def _conv(self, key: str, h: torch.Tensor) -> torch.Tensor:
        return self.convs[key](h)

    def _decode(self, branch: str, h: torch.Tensor) -> torch.Tensor:
        layers = self.decoders[branch]
        g = h
        for block in layers["blocks"]:
            for key in block:
                g = F.relu(self._conv(key, g), inplace=True)
            g = F.interpolate(g, scale_factor=2, mode="nearest")
        activation = self.amp_activation if branch == "amp" else _pi_tanh
        if not self.geometry.pad_object:  # the full head: the last block already upsampled to N
            return activation(self._conv(layers["head"], g))
        # The head reads all but the last BORDER_CHANNELS channels: convolve all of g with the
        # kernel zero-padded over those channels (exactly the same sums; saves copying the slice).
        head = self.convs[layers["head"]]
        x1 = activation(F.conv2d(g, F.pad(head.weight, (0, 0, 0, 0, 0, BORDER_CHANNELS)), head.bias, padding=1))
        q = self.geometry.N // 4
        x1 = F.pad(x1, (q, q, q, q))
        if self.geometry.border_path:
            x2 = g[:, -BORDER_CHANNELS:]
            for key in layers["border_block"]:
                x2 = F.relu(self._conv(key, x2), inplace=True)
            out = self.convs[layers["border_out"]]
            x1 = x1 + F.silu(upsampled_conv3x3(x2, out.weight, out.bias)) * self.border_mask
        return x1

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitude and phase heads (b, out, N, N) for input x (b, in, N, N) scaled by `scale`."""
        h = x.contiguous(memory_format=self.memory_format)
        for i, block in enumerate(self.encoder_blocks):
            for j, key in enumerate(block):
                if i == j == 0:  # the input scale on the first kernel (the same product, reassociated)
                    conv = self.convs[key]
                    h = F.relu(F.conv2d(h, conv.weight * scale, conv.bias, padding=1), inplace=True)
                else:
                    h = F.relu(self._conv(key, h), inplace=True)
            h = F.max_pool2d(h, 2)
        return self._decode("amp", h), self._decode("phase", h)
