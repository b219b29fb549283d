"""Architecture rules a reader relies on: the step libraries never import kfp, the CLI starts light, no step
package reaches into another and the package's imports have no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import sqltune

STEP_LIBRARIES = ("preprocess", "train", "predict", "evaluate", "publish")
PACKAGE = Path(sqltune.__file__).parent


def _imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(done.stdout.split())


def test_step_libraries_do_not_import_kfp():
    imports = "\n".join(f"import sqltune.{step}, sqltune.{step}.run, sqltune.{step}.cli" for step in STEP_LIBRARIES)
    assert "kfp" not in _imported_after(imports), "only <step>/component.py and sqltune.pipeline may import kfp"


def test_the_cli_starts_without_kfp_or_torch():
    loaded = _imported_after("from sqltune.cli import app")
    assert not {"kfp", "torch", "transformers"} & loaded, loaded


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except what an `if TYPE_CHECKING:` block holds (annotations only: nothing runs)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _import_graph() -> dict[str, set[str]]:
    """Every sqltune module -> the sqltune modules it imports, at the top or inside a function."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `from x import name`: the module is x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _step_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STEP_LIBRARIES else None


def test_no_step_package_imports_another():
    """Shared parts (the SQL sandbox and pool, adapters, dataset readers) live outside the steps; a step that needs
    another's code is a sign the code belongs in a shared module."""
    crossings = sorted(
        f"{module} -> {target}"
        for module, targets in _import_graph().items()
        for target in targets
        if _step_of(module) and _step_of(target) and _step_of(module) != _step_of(target)
    )
    assert not crossings, crossings


def test_the_package_imports_have_no_cycle():
    """Between modules, counting imports inside functions too; a package's own __init__ re-exporting its modules
    is not a cycle."""
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue  # a package and its own modules
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_serve_never_imports_kfp_and_loads_torch_only_with_a_backend():
    modules = ("cli", "app", "service", "run", "hf", "vllm_engine", "inferenceservice")
    loaded = _imported_after("\n".join(f"import sqltune.serve.{module}" for module in modules))
    assert not {"kfp", "torch", "transformers", "vllm"} & loaded, loaded
