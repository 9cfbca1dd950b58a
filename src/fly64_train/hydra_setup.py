"""What Hydra needs from fly64-train, next to the console script (cli.py) that uses it: the
conf/ directory, the schema in Hydra's ConfigStore, fly64's resolvers, and the `--help` rendering of
the composed config with every field's help text. config.py stays a plain schema: it imports no
Hydra.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fly64_train import objective, study
from fly64_train.config import TrainingConfig, choice_type, field_types, plain, section_type


def describe(node: Any = None, cls: type = TrainingConfig, indent: str = "") -> str:
    """Every field as `key: value  # help`, nested like the YAML (values from `node`, a composed config,
    else the defaults). What `fly64-train --help` shows under == Config ==."""
    from omegaconf import OmegaConf

    hints = field_types(cls)
    lines = []
    for f in dataclasses.fields(cls):
        nested = section_type(hints.get(f.name))
        child = node.get(f.name) if node is not None else None
        if nested is not None and (child is not None or dataclasses.is_dataclass(hints.get(f.name))):
            lines.append(f"{f'{indent}{f.name}:':<41} # {f.metadata['help']}")
            lines.append(describe(child, nested, indent + "  "))
            continue
        if node is not None and OmegaConf.is_missing(node, f.name):
            value = "???"
        else:
            value = node.get(f.name) if node is not None else f.default
            value = plain(value)
            value = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        text = f"{indent}{f.name}: {value}"
        kind = choice_type(hints.get(f.name))
        choices = f"[{'|'.join(kind.values())}] " if kind is not None else ""
        lines.append(f"{text:<41} # {choices}{f.metadata['help']}")
    return "\n".join(lines).replace("$", "$$")  # Hydra's help template is a string.Template


def register_configs() -> None:
    """Fill Hydra's ConfigStore with the schema and register fly64's resolvers (cli.py and the
    tests' conftest call this)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("fly64.int"):
        # Directory names use integers where the value is one: dose_1000, not dose_1000.0.
        OmegaConf.register_new_resolver("fly64.int", study.format_number)
    if not OmegaConf.has_resolver("fly64.direction"):
        # The Optuna preset's direction follows the objective: ${fly64.direction:${objective}}.
        OmegaConf.register_new_resolver("fly64.direction", lambda name: objective.direction(str(name)))
    if not OmegaConf.has_resolver("fly64.method_suffix"):
        # Directory names: a method other than PtychoPINN gets its own suffix (dense_lsqml), so the
        # methods of one (dose, view) sit side by side in a sweep.
        OmegaConf.register_new_resolver("fly64.method_suffix", lambda kind, model_type, engine: study.method_suffix(
            study.method(str(kind), str(model_type), str(engine))))
    if not OmegaConf.has_resolver("fly64.noise_band"):
        # job=train_raar's group solve takes its noise band from the dose: ${fly64.noise_band:${dose}}.
        OmegaConf.register_new_resolver("fly64.noise_band", study.noise_band)
    if not OmegaConf.has_resolver("fly64.describe"):
        # --help: the composed config with every field's help text (conf/hydra/help/fly64.yaml).
        OmegaConf.register_new_resolver("fly64.describe", lambda *, _root_: describe(_root_))
    store = ConfigStore.instance()
    store.store(name="fly64_schema", node=TrainingConfig)


def conf_dir() -> Path:
    """The absolute conf/ directory: inside an installed wheel, else the checkout's top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"fly64-train's conf/ directory is missing (looked in {here / 'conf'} "
                            f"and {here.parents[1] / 'conf'}); reinstall the package")
