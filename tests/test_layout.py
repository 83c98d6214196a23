"""The package's shape: imports run one way through the layers, few modules at the root, and the
light entry points load no TensorFlow."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fer_keras.core import private_api

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("fer_keras", "tuning")

# Low to high: a module may import its own layer and those below it, never one above.
LAYERS = (
    ("fer_keras.constants", "fer_keras.errors", "fer_keras.core"),
    ("fer_keras.data", "fer_keras.models"),
    ("fer_keras.modelio",),
    ("fer_keras.pretrained",),
    ("fer_keras.inference",),
    ("fer_keras.evaluation",),
    ("fer_keras.training",),
    ("tuning",),
)
# The `python -m` entry points: commands, which may use any layer.
SHIMS = {f"fer_keras.{name}" for name in ("train", "predict", "serve", "video", "export", "evaluate")}


def _modules():
    """{dotted name: source file} of every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def imports_of(path):
    """The package modules `path` imports anywhere in it (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {name for name in found if name in MODULES}


def layer(name):
    """The layer index of module `name`; None for an entry point (a `__main__`, a root shim, and the
    root package, whose lazy `EmotionRecognizer` is the only import it makes past `constants`)."""
    if name == "fer_keras" or name in SHIMS or name.endswith(".__main__"):
        return None
    for index, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"module {name} is in no layer: add its folder to LAYERS")


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, path in MODULES.items():
        own = layer(name)
        if own is None:
            continue
        for imported in sorted(imports_of(path) - {name, "fer_keras"}):  # the root gives constants, __version__
            theirs = layer(imported)
            if theirs is None or theirs > own:
                upward.append(f"{name} imports {imported}")
    assert not upward, "imports from a lower layer up:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from fer_keras.training import runner\n")
    assert imports_of(path) == {"fer_keras.training.runner"}
    assert layer("fer_keras.training.runner") > layer("fer_keras.evaluation.compare")


def test_at_most_eight_modules_at_the_package_root():
    root = sorted(p.stem for p in (REPO / "fer_keras").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(root) <= 8, root


@pytest.mark.parametrize("module", ["fer_keras", "fer_keras.training.config", "fer_keras.core.runs"])
def test_light_modules_load_no_tensorflow(module):
    """`import fer_keras` and the config (which `--help` and every resolver need) stay quick."""
    code = f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _pinned(package):
    """The version requirements.txt pins `package` to."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.split("#")[0].strip()
    raise AssertionError(f"requirements.txt pins no {package}")


def test_private_apis_are_all_in_one_module_and_the_pinned_versions_provide_them():
    """A version other than the pinned one fails here first, with what to re-check named."""
    from importlib.metadata import version

    for package in ("keras", "keras-tuner"):
        assert version(package) == _pinned(package), (
            f"{package} {version(package)} is not the pinned {_pinned(package)}: check what "
            f"fer_keras/core/private_api.py uses of it, then update the pin")
    for name, (module, _, used) in private_api.PRIVATE.items():
        found = getattr(private_api, name)
        missing = [attribute for attribute in used if not hasattr(found, attribute)]
        assert not missing, f"{module} lacks {missing}: fer_keras/core/private_api.py needs a new way"
    for name, path in MODULES.items():
        if name != "fer_keras.core.private_api":
            private = {m for m in _imported_names(path) if ".src." in f"{m}." and m.split(".")[0] in ("keras", "keras_tuner")}
            assert not private, f"{name} imports private {private}: go through fer_keras.core.private_api"


def _imported_names(path):
    """Every module name `path` imports (any package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
