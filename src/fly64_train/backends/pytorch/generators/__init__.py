"""The torch generators: one module per name of architecture.GENERATORS, each defining
`Generator(geometry, memory_format)`, an nn.Module whose forward (x (b, in, N, N), input scale) gives
amplitude, phase (b, out, N, N), and whose `named_tensors()` maps every architecture.py parameter name
(in architecture order) to the tensor holding it (conv kernels in torch's OIHW)."""
from __future__ import annotations

import importlib

import torch

from fly64_train.architecture import GENERATORS, Geometry


def build(geometry: Geometry, memory_format: torch.memory_format):
    """The generator `geometry.generator`."""
    if geometry.generator not in GENERATORS:
        raise ValueError(f"generator={geometry.generator!r}; expected one of {', '.join(GENERATORS)}")
    return importlib.import_module(f"{__name__}.{geometry.generator}").Generator(geometry, memory_format)


def conv_modules(convs) -> tuple[torch.nn.ModuleDict, dict[str, torch.Tensor]]:
    """nn.Conv2d per architecture.Conv ('same' padding, bias) and architecture name → its tensors."""
    modules, tensors = torch.nn.ModuleDict(), {}
    for conv in convs:
        module = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.size, padding=conv.size // 2, bias=True)
        modules[module_key(conv.name)] = module
        tensors[f"{conv.name}/kernel"], tensors[f"{conv.name}/bias"] = module.weight, module.bias
    return modules, tensors


def module_key(name: str) -> str:
    """An architecture.py layer name ('decoder_amp/block0/conv1') as an nn.ModuleDict key."""
    return name.replace("/", "__")
