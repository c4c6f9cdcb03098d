"""How far the whole recipe travels in ``zsq_onnx/`` (issue 27's measures), read from the source.

- ``recipe_takers``: each function with a parameter annotated ``Recipe`` (or named ``recipe``)
  and the recipe fields it reads (``recipe.x``, or the whole object passed on).
- ``stops``, ``places`` and ``climbs``: following ``recipe`` from ``pipeline.convert`` through
  every call that hands the whole recipe on (the call tree unfolded), each call is a stop, the
  functions reached are the places, and each dead end but the last is a climb back up.
- ``import_cycles``: module import cycles inside the package (imports inside functions included).
- ``long_functions``: functions over 60 lines.

    python bench/seams.py
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "zsq_onnx"
MAX_LINES = 60


@dataclass
class Function:
    """One function: where it is, what it reads of ``recipe`` and whom it hands it to."""

    module: str
    name: str
    lines: int
    takes_recipe: bool
    fields: set[str] = field(default_factory=set)
    passes_to: list[str] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _recipe_parameter(node: ast.FunctionDef) -> str | None:
    for argument in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
        annotation = ast.unparse(argument.annotation) if argument.annotation is not None else ""
        if annotation.strip("'\"") in ("Recipe", "Recipe | None") or (argument.arg == "recipe" and not annotation):
            return argument.arg
    return None


def _functions(tree: ast.Module, module: str) -> Iterator[tuple[ast.FunctionDef, str]]:
    """The module's functions and the methods of its classes (nested ones count in their parent)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield item, f"{module}.{node.name}.{item.name}"
    for item in tree.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            yield item, f"{module}.{item.name}"


def _called_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def read_function(node: ast.FunctionDef, module: str, qualified: str) -> Function:
    """What ``node`` reads of its recipe parameter and to which calls it passes it whole."""
    parameter = _recipe_parameter(node)
    function = Function(module, qualified, node.end_lineno - node.lineno + 1, parameter is not None)
    if parameter is None:
        return function
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name) and child.value.id == parameter:
            function.fields.add(child.attr)
        if isinstance(child, ast.Call):
            arguments = [*child.args, *(keyword.value for keyword in child.keywords)]
            if any(isinstance(argument, ast.Name) and argument.id == parameter for argument in arguments):
                function.passes_to.append(_called_name(child))
    return function


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules ``tree`` imports: ``from zsq_onnx import distributed`` is the module
    ``zsq_onnx.distributed``, not the package."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zsq_onnx"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("zsq_onnx"))
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def follow(functions: dict[str, Function], start: str) -> tuple[int, int, set[str]]:
    """Unfold the calls handing the whole recipe on from ``start`` as a tree, the way a reader
    follows it: each call is a stop, and each leaf but the last sends the reader back up (a
    climb). Returns stops, climbs and the functions visited."""
    by_short: dict[str, list[str]] = {}
    for name in functions:
        by_short.setdefault(name.rsplit(".", 1)[-1], []).append(name)

    def callees(name: str) -> list[str]:
        return [callee for called in functions[name].passes_to for callee in by_short.get(called.rsplit(".", 1)[-1], []) if functions[callee].takes_recipe]

    stops, leaves, places = 0, 0, {start}
    todo = [(start, (start,))]
    while todo:
        name, path = todo.pop()
        below = [callee for callee in callees(name) if callee not in path]
        leaves += not below
        for callee in below:
            stops += 1
            places.add(callee)
            todo.append((callee, (*path, callee)))
    return stops, max(leaves - 1, 0), places


def main() -> None:
    """Read the package and print the measures as one JSON line."""
    functions: dict[str, Function] = {}
    trees = {_module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}
    modules = set(trees)
    imports = {module: _imports(tree, modules) for module, tree in trees.items()}
    for module, tree in trees.items():
        for node, qualified in _functions(tree, module):
            functions[qualified] = read_function(node, module, qualified)
    graph = {module: {target for target in targets if target in modules and target != module} for module, targets in imports.items()}
    stops, climbs, places = follow(functions, "zsq_onnx.pipeline.convert")
    takers = {name: sorted(f.fields) + [f"-> {callee}" for callee in sorted(set(f.passes_to))] for name, f in functions.items() if f.takes_recipe}
    long_functions = {name: f.lines for name, f in functions.items() if f.lines > MAX_LINES}
    emit_json({
        "bench": "seams", "recipe_takers": len(takers), "stops": stops, "places": len(places), "climbs": climbs,
        "import_cycles": import_cycles(graph), "long_functions": long_functions, "functions_taking_recipe": takers,
    })


if __name__ == "__main__":
    main()
