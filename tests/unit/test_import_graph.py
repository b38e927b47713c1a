"""No import cycles in signer_proxy: calls go only downward (transport → router → methods →
chain/nonces/keys/access → upstream; config and errors at the bottom).

The graph is read from the source (ast), so it sees every import: module level, inside
functions (lazy imports only hide a cycle until the day the order changes) and under
`if TYPE_CHECKING:` (an annotation that points up is a layer that points up). Importing
`a.b.c` also runs the package `a.b`, so that is an edge too, unless the importer lives in it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import signer_proxy

ROOT = Path(signer_proxy.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module `name` is, or lives in (`pkg.mod.Class` → `pkg.mod`); None outside us."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every signer_proxy module `module` imports, anywhere in its source."""
    named: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            named.add(source)
            named.update(f"{source}.{alias.name}" for alias in node.names)
    found = set()
    for name in named:
        target = _resolve(name)
        while target and target != module:
            if not module.startswith(target + "."):  # our own package runs before us anyway
                found.add(target)
            target = target.rpartition(".")[0] or None
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    # The checker sees what it must: lazy and TYPE_CHECKING imports and package __init__s.
    assert "signer_proxy.config" in GRAPH["signer_proxy.keys.sources"]
    assert "signer_proxy.config" in GRAPH["signer_proxy.keys.backends"]  # TYPE_CHECKING only
    assert "signer_proxy.keys" in GRAPH["signer_proxy.ops.metrics"]  # the package runs first
    assert "signer_proxy.keys.signer" in GRAPH["signer_proxy.ops.tracing"]  # inside a function
    assert "signer_proxy.keys" not in GRAPH["signer_proxy.keys.sources"]  # its own package


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        pytest.param({"a": {"b"}, "b": {"c"}, "c": set()}, [], id="chain"),
        pytest.param({"a": {"b"}, "b": {"a"}}, [["a", "b"]], id="pair"),
        pytest.param(
            {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]], id="ring"
        ),
        pytest.param({"a": {"a"}}, [["a"]], id="self"),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert _cycles(graph) == expected


def test_no_module_imports_itself_back() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (move the shared piece down a layer): " + "; ".join(
        " ↔ ".join(cycle) for cycle in cycles
    )


def test_config_and_errors_import_nothing_of_ours_above_them() -> None:
    # The bottom layer: everything may read Settings and raise our errors.
    assert GRAPH["signer_proxy.errors"] <= {"signer_proxy"}
    assert GRAPH["signer_proxy.config"] <= {"signer_proxy", "signer_proxy.errors"}
