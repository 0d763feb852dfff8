"""jlvm/__init__.py and the package's shape: the public names, imported on first use, and
modules that import each other one way only."""

import ast
import pathlib
import subprocess
import sys

import jlvm

PACKAGE = pathlib.Path(jlvm.__file__).parent


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The jlvm modules ``path`` imports when it is imported (statements at its top level,
    not those inside functions, which run later)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports nothing at run time
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("jlvm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("jlvm"):
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle's modules, found by depth-first search."""
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                cycles.append([*path[path.index(successor):], successor])
            elif successor not in state:
                visit(successor, [*path, successor])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_module_imports_one_that_imports_it_back():
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {imported for imported in _imports(path) if imported in modules
                    and imported != name} for name, path in modules.items()}
    # a package imports its submodules' parents implicitly; those edges are no cycle
    graph = {name: {m for m in imports if not name.startswith(m + ".")}
             for name, imports in graph.items()}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles(graph) == []


def test_the_public_names_load_on_first_use_and_the_command_starts_without_jax():
    for name in jlvm.__all__:
        assert getattr(jlvm, name) is not None, name
    assert set(jlvm.__all__) <= set(dir(jlvm))
    code = ("import sys, jlvm.cli; jlvm.cli._parser(); "
            "print('jax' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # `jlvm --help` answers at once
