"""The unet generator in torch (architecture.UnetLayers), channels-first."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fly64_train.architecture import Geometry
from fly64_train.backends.pytorch.generators import conv_modules, module_key
from fly64_train.backends.pytorch.model import AMP_ACTIVATIONS


class Generator(nn.Module):
    def __init__(self, geometry: Geometry, memory_format: torch.memory_format):
        super().__init__()
        self.layers = layers = geometry.unet()
        self.memory_format = memory_format
        convs = [*(c for b in layers.encoder for c in b), *layers.bottleneck, *(c for b in layers.decoder for c in b),
                 layers.head_amp, layers.head_phase]
        self.convs, tensors = conv_modules(convs)
        self._tensors = {param.name: tensors[param.name] for param in layers.params()}  # architecture order
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]
        self.to(memory_format=memory_format)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def _block(self, block, h: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        first, second = (self.convs[module_key(conv.name)] for conv in block)
        weight = first.weight if scale is None else first.weight * scale  # the input scale, on the kernel
        h = F.gelu(F.conv2d(h, weight, first.bias, padding=1))
        return F.gelu(second(h))

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.layers
        h = x.contiguous(memory_format=self.memory_format)
        skips = []
        for i, block in enumerate(layers.encoder):
            h = self._block(block, h if i == 0 else F.max_pool2d(h, 2), scale if i == 0 else None)
            skips.append(h)
        h = self._block(layers.bottleneck, F.max_pool2d(h, 2))
        for block, skip in zip(layers.decoder, reversed(skips)):
            h = self._block(block, torch.cat((F.interpolate(h, scale_factor=2, mode="nearest"), skip), dim=1))
        amplitude = self.amp_activation(self.convs[module_key(layers.head_amp.name)](h))
        phase = math.pi * torch.tanh(self.convs[module_key(layers.head_phase.name)](h))
        return amplitude, phase
