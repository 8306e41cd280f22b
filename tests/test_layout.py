"""The shape of the package: layers import only downward (README's layout), README lists every module, and no
function is longer than 80 lines. Plain AST reads: no module is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "dogbreed"

# Floors, bottom (0) to top (3), as in README's "Project layout". A module imports only from its floor or below.
LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "fileio", "paths", "runtime", "accel", "breeds", "transforms", "specs", "backbones"],
                    0),
    **dict.fromkeys(["data", "features", "models", "onnxrun", "export", "resolve", "calibration", "dogness",
                     "inference"], 1),
    **dict.fromkeys(["predict", "train", "adapt", "evaluate", "explain", "gallery", "batch", "batch_ray",
                     "batch_ray_watch", "card"], 2),
    **dict.fromkeys(["serve", "cli", "__init__"], 3),
}
MAX_LINES = 80
LONG_OK: dict[str, str] = {}  # "module:function" -> why it must stay long (none today)


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def _top(path: Path) -> str:
    """The floor-level name of a source file: dogbreed/train/loop.py -> train, dogbreed/cli.py -> cli."""
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else rel[0][:-3]


def _imported(path: Path, tree: ast.AST) -> set[str]:
    """Top-level dogbreed modules this file imports (module level and inside functions)."""
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]  # ('dogbreed',) or ('dogbreed', 'train')
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[:len(pkg_parts) - node.level + 1])
                full = base + (node.module.split(".") if node.module else [])
                names = [".".join(full + ([a.name] if not node.module else [])) for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "dogbreed" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_module_has_a_floor_and_imports_only_downward() -> None:
    bad = []
    for path in _modules():
        top = _top(path)
        assert top in LAYERS, f"{path.relative_to(ROOT)}: place {top!r} on a floor in LAYERS and in README's layout"
        for dep in _imported(path, ast.parse(path.read_text())):
            if dep in LAYERS and dep != top and LAYERS[dep] > LAYERS[top]:
                bad.append(f"{path.relative_to(ROOT)} (floor {LAYERS[top]}) imports {dep} (floor {LAYERS[dep]})")
    assert bad == [], "imports that run upward:\n" + "\n".join(bad)


def test_readme_layout_lists_every_module() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Project layout"):text.index("## Licence")]
    missing = [name for name in {_top(p) for p in _modules()} - {"__init__"}
               if not re.search(rf"\b{re.escape(name)}(\.py|/)", layout)]
    assert missing == [], f"README's layout section does not mention {missing}"
    for sub in ("train", "serve", "inference"):
        for p in sorted((PKG / sub).glob("*.py")):
            if p.name != "__init__.py":
                assert p.name in layout, f"README's layout section does not mention {sub}/{p.name}"


def _module_name(path: Path) -> str:
    """dogbreed/inference/decode.py -> inference.decode; dogbreed/serve/__init__.py -> serve."""
    parts = path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, tree: ast.AST, known: set[str]) -> set[str]:
    """The package's modules this file imports, as dotted names below dogbreed (``from .x import y`` counts y when
    it is a module, else x), module level and inside functions alike."""
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases = [(a.name.split("."), []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (list(pkg_parts[:len(pkg_parts) - node.level + 1]) if node.level else []) + \
                   (node.module.split(".") if node.module else [])
            bases = [(base, [a.name for a in node.names])]
        else:
            continue
        for base, names in bases:
            if base[:1] != ["dogbreed"]:
                continue
            mod = ".".join(base[1:])
            subs = [f"{mod}.{n}" if mod else n for n in names]
            hits = [m for m in subs if m in known]
            out.update(hits or ([mod] if mod in known else []))
    return out


def test_nothing_imports_in_a_circle() -> None:
    """No module imports another that (directly or not) imports it back: lazy imports inside functions count."""
    files = {_module_name(p): p for p in _modules()}
    known = set(files)
    graph = {m: _imported_modules(p, ast.parse(p.read_text()), known) - {m} for m, p in files.items()}
    # A package's __init__ re-exporting its own submodules is how a package is built, not a circle.
    graph = {m: {d for d in deps if not (d.startswith(m + ".") and files[m].name == "__init__.py")}
             for m, deps in graph.items()}
    cycles: list[str] = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "modules that import each other:\n" + "\n".join(cycles)


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                key = f"{path.stem}:{node.name}"
                if n > MAX_LINES and key not in LONG_OK:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == [], "functions over 80 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("source, expected", [
    ("from ..predict import Predictor", {"predict"}),
    ("from .. import evaluate as ev", {"evaluate"}),
    ("from .config import X", {"train"}),
    ("import dogbreed.models", {"models"}),
])
def test_import_reader(source: str, expected: set[str]) -> None:
    assert _imported(PKG / "train" / "run.py", ast.parse(source)) == expected
