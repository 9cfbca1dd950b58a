"""The package's layering, read from its source: which module may import a framework, which may touch
Hydra's runtime, which may name a backend, and that nothing reads the legacy params dict."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fly64_train.backends import registry

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fly64_train"
MODULES = sorted(PACKAGE.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | \
        {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


# The iterative engine's adapter: the one module that imports pty-chi, and torch through it.
ITERATIVE_ENGINE = "iterative/ptychi_engine.py"


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_only_a_backends_package_imports_its_framework(name):
    framework = registry.BACKENDS[name].framework
    package = registry.BACKENDS[name].target.split(":")[0].split(".")[-1]
    importers = {relative(path) for path in MODULES if framework in imported_roots(path)} - {ITERATIVE_ENGINE}
    assert importers and all(path.startswith(f"backends/{package}/") for path in importers), importers


def test_only_the_iterative_engine_imports_pty_chi_and_it_imports_no_other_framework():
    importers = {relative(path) for path in MODULES if "ptychi" in imported_roots(path)}
    assert importers == {ITERATIVE_ENGINE}
    frameworks = {entry.framework for entry in registry.BACKENDS.values()}
    assert frameworks & imported_roots(PACKAGE / ITERATIVE_ENGINE) == {"torch"}  # pty-chi's own framework


def test_only_the_cli_and_the_sweep_callback_touch_hydras_runtime():
    runtime = {relative(path) for path in MODULES if {"HydraConfig", "RunMode"} & names_used(path)}
    assert runtime == {"cli.py", "sweep.py"}


def test_backends_are_named_only_in_the_registry_and_their_packages():
    for path in MODULES:
        where = relative(path)
        if where == "backends/registry.py" or any(where.startswith(f"backends/{e.target.split(':')[0].split('.')[-1]}/")
                                                  for e in registry.BACKENDS.values()):
            continue
        strings = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        named = {name for name in registry.BACKENDS if name in strings}
        assert not named, f"{where} names backend(s) {named}: choose through backends/registry.py"


def legacy_reads(path: Path) -> list[int]:
    """Lines of `path` that read the legacy params dict: a subscript or .get of the key 'legacy_params'
    (the bundle's copy: content["legacy_params"]), or of any key of a dict named params / legacy_params."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):  # x["N"]
            target, key = node.value, node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:  # x.get("N")
            target, key = node.func.value, node.args[0]
        else:
            continue
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        if key.value == "legacy_params" or (isinstance(target, ast.Name) and target.id in ("params", "legacy_params")):
            lines.append(node.lineno)
    return sorted(lines)


def test_nothing_reads_the_legacy_params_dict():
    """legacy.py writes the dict (for the record and the original's code); no module of the package or
    benchmark reads it back: what evaluation needs is a field of the bundle's manifest."""
    readers = [f"{path}:{line}" for path in MODULES + sorted((PACKAGE.parents[1] / "benchmarks").glob("*.py"))
               if path != PACKAGE / "legacy.py" for line in legacy_reads(path)]
    assert not readers, readers


def test_the_legacy_read_check_sees_reads(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('a = content["legacy_params"].get("diffraction_norm")\nb = params.get("N")\n'
                      'c = {"legacy_params": {}}\nparams["N"] = 3\n')
    assert sorted(legacy_reads(sample)) == [1, 2]  # a write (line 3, 4) is no read


def test_framework_free_modules_import_no_framework():
    import subprocess
    import sys

    modules = ["fly64_train.cli", "fly64_train.runner", "fly64_train.bundle", "fly64_train.iterative.job",
               "fly64_train.training", "fly64_train.backends.base", "fly64_train.backends.registry",
               "fly64_train.files", "fly64_train.sweep"]
    frameworks = [entry.framework for entry in registry.BACKENDS.values()] + ["ptychi"]
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            f"bad = [m for m in {frameworks!r} if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports: at the top, inside functions and under TYPE_CHECKING alike
    (a lazy import hides a circle, it does not cut it). `from a import b` counts as a.b when that is a
    module, else as a."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return (found & modules) - {name}


def test_the_import_graph_of_the_package_is_acyclic():
    """Every module can be read (and tested) from the bottom up: no module imports, directly or through
    others, a module that imports it back."""
    modules = {module_name(path): path for path in MODULES}
    graph = {name: package_imports(path, set(modules)) for name, path in modules.items()}
    assert graph["fly64_train.runner"] >= {"fly64_train.config", "fly64_train.specs"}  # the parse sees imports
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target] if target in trail else [name, target]
                pytest.fail("import circle: " + " → ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
