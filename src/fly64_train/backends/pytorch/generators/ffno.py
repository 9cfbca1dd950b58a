"""The ffno generator in torch (architecture.FfnoLayers), channels-first at constant N×N resolution."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fly64_train import architecture
from fly64_train.architecture import Geometry
from fly64_train.backends.pytorch.generators import conv_modules, module_key
from fly64_train.backends.pytorch.model import AMP_ACTIVATIONS, instance_norm


class Generator(nn.Module):
    def __init__(self, geometry: Geometry, memory_format: torch.memory_format):
        super().__init__()
        self.layers = layers = geometry.ffno()
        self.memory_format = memory_format
        convs = [*layers.lift, *(c for b in layers.blocks for c in b), *(c for b in layers.refiners for c in b),
                 layers.head_amp, layers.head_phase]
        self.convs, tensors = conv_modules(convs)
        width, modes = layers.spectral.width, layers.spectral.modes
        self.spectral_x = nn.Parameter(torch.zeros(width, width, modes, 2))
        self.spectral_y = nn.Parameter(torch.zeros(width, width, modes, 2))
        self.gate = nn.Parameter(torch.zeros(()))
        tensors.update({f"{layers.spectral.name}/x": self.spectral_x, f"{layers.spectral.name}/y": self.spectral_y,
                        layers.gate.name: self.gate})
        self._tensors = {param.name: tensors[param.name] for param in layers.params()}  # architecture order
        for name, matrix in zip(("fc", "fs", "ic", "is_"), architecture.spectral_basis(geometry.N, modes)):
            self.register_buffer(name, torch.from_numpy(matrix), persistent=False)
        self.amp_activation = AMP_ACTIVATIONS[geometry.amp_activation]
        self.to(memory_format=memory_format)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._tensors)

    def _conv(self, conv, x: torch.Tensor) -> torch.Tensor:
        return self.convs[module_key(conv.name)](x)

    def _mix(self, x_re: torch.Tensor, x_im: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex channel mixing per mode: (b, c, ·, k) × (c, o, k) → (b, o, ·, k)."""
        w_re, w_im = weight[..., 0], weight[..., 1]
        y_re = torch.einsum("bcsk,cok->bosk", x_re, w_re) - torch.einsum("bcsk,cok->bosk", x_im, w_im)
        y_im = torch.einsum("bcsk,cok->bosk", x_re, w_im) + torch.einsum("bcsk,cok->bosk", x_im, w_re)
        return y_re, y_im

    def spectral(self, h: torch.Tensor) -> torch.Tensor:
        """The factorised spectral convolution (architecture.SpectralConv) of h (b, w, N, N)."""
        along_x = self._mix(h @ self.fc, h @ self.fs, self.spectral_x)  # rows' DFT (last axis = x)
        out = along_x[0] @ self.ic + along_x[1] @ self.is_
        columns = h.transpose(-1, -2)  # (b, w, x, y): the same along y
        along_y = self._mix(columns @ self.fc, columns @ self.fs, self.spectral_y)
        return out + (along_y[0] @ self.ic + along_y[1] @ self.is_).transpose(-1, -2)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.layers
        first = self.convs[module_key(layers.lift[0].name)]
        h = F.conv2d(x.contiguous(memory_format=self.memory_format), first.weight * scale, first.bias, padding=1)
        h = self._conv(layers.lift[1], F.gelu(h))
        for mlp0, mlp1 in layers.blocks:
            update = self._conv(mlp1, F.gelu(self._conv(mlp0, instance_norm(self.spectral(h)))))
            h = h + self.gate * update
        for conv0, conv1 in layers.refiners:
            h = h + self._conv(conv1, F.gelu(self._conv(conv0, h)))
        amplitude = self.amp_activation(self._conv(layers.head_amp, h))
        phase = math.pi * torch.tanh(self._conv(layers.head_phase, h))
        return amplitude, phase
