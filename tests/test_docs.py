"""The README and docs/architecture.md point only inside the repository, at files that exist, and
every code name they put in backticks (a module, a function or class of the package, a setting,
an override, a config group's option) exists: a rename that leaves a doc behind fails here."""
from __future__ import annotations

import dataclasses
import importlib
import re
import typing

import pytest

from fly64_train import config
from tests.conftest import REPO

DOCS = [REPO / "README.md", REPO / "docs" / "architecture.md", REPO / "docs" / "results.md"]
PACKAGE = REPO / "src" / "fly64_train"
# Where a dotted name's first part may live: the package and its subpackages.
NAMESPACES = ("fly64_train", "fly64_train.data", "fly64_train.backends", "fly64_train.evaluation",
              "fly64_train.tracking", "fly64_train.iterative")
# Dotted names that belong to other projects or are not code of this one.
FOREIGN = {"hydra", "tf", "nn", "os", "fly64", "np", "torch", "train_throughput", "study_summary", "params",
           "escape"}  # escape.escaped: a key of the quality benchmark's JSON
FILE_SUFFIXES = (".json", ".csv", ".png", ".zip", ".yaml", ".h5", ".log", ".npz", ".db", ".cfg", ".py", ".jsonl",
                 ".md", ".sh")
FILE_NAME = r"[\w./]+\.py|conf/[\w./]+\.yaml|(backends|tracking|data|evaluation|iterative)/[\w/]*"
CONFIG_GROUPS = {path.name for path in (REPO / "conf").iterdir() if path.is_dir() and path.name != "hydra"}


def code_spans(doc) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # code blocks: commands, not names
    return [span for span in re.findall(r"`([^`\n]+)`", text)]


def resolve(dotted: str) -> bool:
    """Whether `a.b.c` is an attribute path into one of the package's modules."""
    parts = dotted.split(".")
    for namespace in NAMESPACES:
        for cut in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join([namespace, *parts[:cut]]))
            except ImportError:
                continue
            try:
                for part in parts[cut:]:
                    target = getattr(target, part)
            except AttributeError:
                return False
            return True
    return False


def setting_exists(key: str) -> bool:
    """Whether `section.field...` (or a top-level field) is a field of TrainingConfig."""
    cls = config.TrainingConfig
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        cls = config.section_type(config.field_types(cls).get(part))
        if cls is None and part != key.split(".")[-1]:
            return False
    return True


def defined_functions() -> set[str]:
    return {name for path in PACKAGE.rglob("*.py") for name in re.findall(r"def (\w+)\(", path.read_text())}


def problems(span: str, functions: set[str]) -> list[str]:
    """What is wrong with one backticked span (empty when it names nothing of ours or what exists)."""
    found = []
    if span.startswith("--"):  # a command-line option of a script (--set key=value)
        return found
    for word in span.split():
        word = word.strip(",;")
        if "<" in word or "*" in word or "..." in word or "==" in word or word.startswith(("-", "/", ".", "'", '"')):
            continue
        key, _, value = word.partition("=")
        if value and re.fullmatch(r"[a-z_][\w.]*", key):  # an override: key=value
            if "." in key:
                if key.split(".")[0] != "hydra" and not setting_exists(key):
                    found.append(f"setting {key}")
            elif key in CONFIG_GROUPS:
                for option in value.strip("[]").split(","):
                    if not (REPO / "conf" / key / f"{option}.yaml").is_file():
                        found.append(f"option {key}={option} (no conf/{key}/{option}.yaml)")
            elif not setting_exists(key):
                found.append(f"setting {key}")
            continue
        if word.endswith(FILE_SUFFIXES) or "/" in word:
            continue  # paths: checked by test_the_docs_name_existing_files
        name = re.sub(r"\(.*\)?$", "", word)  # spec_from_config(config, ...) → spec_from_config
        if not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name):
            if word.endswith(")") and re.fullmatch(r"[a-z_]\w*", name) and name not in functions:
                found.append(f"function {name}()")
            continue
        first = name.split(".")[0]
        if first in FOREIGN:
            continue
        if first in {f.name for f in dataclasses.fields(config.TrainingConfig)} and setting_exists(name):
            continue
        if not resolve(name):
            found.append(f"name {name}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(doc):
    text = doc.read_text()
    assert "../" not in text, f"{doc.name} points outside the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_name_in_backticks_exists(doc):
    functions = defined_functions()
    missing = sorted({problem for span in code_spans(doc) for problem in problems(span, functions)})
    assert not missing, f"{doc.name} names what the code does not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_name_existing_files(doc):
    packages = [PACKAGE, *(path for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__")]
    roots = [*packages, REPO / "tests", REPO / "benchmarks", REPO]
    missing = []
    for span in code_spans(doc):
        for word in span.split():
            if "<" in word or "*" in word or "=" in word or word.startswith(("-", "http")):
                continue
            if re.fullmatch(FILE_NAME, word):
                if not any((root / word.lstrip("./")).exists() for root in roots):
                    missing.append(word)
    assert not missing, f"{doc.name} names missing files: {missing}"


def test_the_checks_see_a_renamed_name():
    functions = defined_functions()
    assert problems("evaluate.score_predictions", functions) == ["name evaluate.score_predictions"]
    assert problems("evaluation.score_predictions", functions) == []
    assert problems("specs.spec_from_config(config, padded_size, probe)", functions) == []
    assert problems("backends.base.spec_from_config", functions) == ["name backends.base.spec_from_config"]
    assert problems("dataset.train_path=x.npz", functions) == []
    assert problems("dataset.trainpath=x.npz", functions) == ["setting dataset.trainpath"]
    assert problems("logger=[csv,tensorboard]", functions) == []
    assert problems("dataset=hdf5", functions) == ["option dataset=hdf5 (no conf/dataset/hdf5.yaml)"]
    assert problems("evaluate_predictions()", functions) == []
    assert problems("evaluate_bundles()", functions) == ["function evaluate_bundles()"]
