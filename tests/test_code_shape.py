"""The code stays readable: no import cycle inside cl_asr, no function longer than 80 lines, no private name
imported across modules, every relative import resolves, and the training loop fits in one file of about a
screen's worth of Avalanche glue and one training step."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cl_asr"
MAX_FUNCTION_LINES = 80
TRAINING_LOOP = ROOT / "cl" / "template.py"


def _modules():
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        package = parts[:-1] if f.name == "__init__.py" else parts[:-1]
        name = ".".join(parts[:-1] if f.name == "__init__.py" else parts)
        yield f, name, ".".join(package if f.name != "__init__.py" else parts[:-1]), ast.parse(f.read_text())


def _imports(tree, package: str):
    """(module imported, names imported) for every import of cl_asr, at any depth (function-level too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("cl_asr"):
                yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cl_asr"):
                    yield node.lineno, a.name, []


def test_no_import_cycle():
    modules = {name: (f, package, tree) for f, name, package, tree in _modules()}
    graph = {}
    for name, (f, package, tree) in modules.items():
        deps = set()
        for _, target, names in _imports(tree, package):
            deps.add(target)
            deps.update(f"{target}.{n}" for n in names)  # `from pkg import submodule`
        graph[name] = {d for d in deps if d in modules and d != name}
    assert len(graph) > 30
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_no_function_longer_than_80_lines():
    long = [f"{f.relative_to(ROOT.parent)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for f, _, _, tree in _modules() for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_no_private_names_imported_across_modules_and_every_relative_import_resolves():
    private, unresolved = [], []
    for f, _, package, tree in _modules():
        for line, target, names in _imports(tree, package):
            private += [f"{f.relative_to(ROOT.parent)}:{line} {target}.{n}" for n in names if n.startswith("_")
                        and not n.startswith("__")]
            path = ROOT.parent / Path(*target.split("."))
            if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                unresolved.append(f"{f.relative_to(ROOT.parent)}:{line} {target}")
    assert not private, private
    assert not unresolved, unresolved


def test_the_training_loop_file_is_about_a_screen():
    assert len(TRAINING_LOOP.read_text().splitlines()) <= 250
