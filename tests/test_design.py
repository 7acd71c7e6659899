"""docs/design.md against the code: every module named once with its layer, every import going
down (or sideways, without a cycle), no file over 400 lines and no function over 60 on the
launcher's side and in code/gitexp/. Reads files only: no copy of the template, no make."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\d+) \| `((?:scripts|code)/[\w/]+\.py)` \| .+ \|$", re.M)
KNOWN_CYCLES = set()  # none left; a cycle that must stay a while is named here with its reason
LOOP_MODULES = {"config", "data", "model", "task", "main"}


def layers():
    """{path: (side, layer)}; scripts/ as a whole above code/."""
    found = {}
    for layer, path in ROW.findall((ROOT / "docs" / "design.md").read_text()):
        assert path not in found, f"{path} is named twice in docs/design.md"
        found[path] = (1 if path.startswith("scripts/") else 0, int(layer))
    return found


def modules():
    return sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "code").glob("*.py"),
                                                      *(ROOT / "code" / "gitexp").glob("*.py")])


def imports(path):
    """The repository's modules that `path` imports, anywhere in it (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("gitexp."):
                candidate = f"code/gitexp/{name.split('.')[1]}.py"
            elif name in LOOP_MODULES:
                candidate = f"code/{name}.py"
            elif path.startswith("scripts/"):
                candidate = f"scripts/{name}.py"
            else:
                continue
            if (ROOT / candidate).is_file() and candidate != path:
                found.add(candidate)
    return found


def test_the_map_names_every_module_once():
    named, present = set(layers()), set(modules())
    assert present - named == set(), f"modules docs/design.md does not name: {sorted(present - named)}"
    assert named - present == set(), f"docs/design.md names modules that are gone: {sorted(named - present)}"


def test_nothing_imports_upward_nor_in_a_cycle():
    layer = layers()
    edges = {path: imports(path) for path in modules()}
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer[b] > layer[a]]
    assert upward == [], f"imports from a lower layer to a higher one: {upward}"
    sideways = {a: {b for b in targets if layer[b] == layer[a] and (a, b) not in KNOWN_CYCLES}
                for a, targets in edges.items()}
    done, active = set(), []

    def visit(node):
        assert node not in active, f"an import cycle: {' -> '.join(active[active.index(node):] + [node])}"
        if node in done:
            return
        active.append(node)
        for target in sorted(sideways[node]):
            visit(target)
        active.pop()
        done.add(node)
    for node in sorted(sideways):
        visit(node)


def test_files_and_functions_stay_small():
    too_long, too_big = [], []
    for path in modules():
        text = (ROOT / path).read_text()
        if text.count("\n") > 400:
            too_long.append(f"{path} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_big.append(f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert too_long == [] and too_big == [], f"over 400 lines: {too_long}; functions over 60 lines: {too_big}"


def test_the_schema_names_what_does_not_fit():
    """gitexp/schema.py's check: a record as a run writes it passes; each kind of misfit is named."""
    import sys
    sys.path.append(str(ROOT / "code"))
    from gitexp import schema

    good = {"tag": "a", "id": 0, "commit": "0" * 40, "status": "finished", "seed": 1, "fix": False, "host": "h",
            "start": "2026-12-04T18:00:00+00:00", "end": "2026-12-04T18:01:00+00:00", "epoch": 2, "step": 20,
            "world_size": 1, "hparams": {"lr": 0.1}, "metrics": {"best": {"epoch": 2}, "last": {"epoch": 2}},
            "durations": {"epoch_seconds": [0.1, 0.1], "total_seconds": 0.2}, "environment": {"torch": "2"},
            "conditions": {"world_size": 1, "nodes": 1, "processes_per_node": 1, "gpus": None, "nproc": None,
                           "threads": 2}}
    assert schema.problems(good) == []
    for change, expected in [({"fix": 0}, "fix is int"), ({"id": True}, "id is bool"),
                             ({"status": "done"}, "status is 'done'"), ({"commit": "abc"}, "not 40 hex digits"),
                             ({"colour": "red"}, "colour is not a field"), ({"seed": None}, "seed is NoneType"),
                             ({"conditions": {**good["conditions"], "threads": "2"}}, "conditions.threads is str")]:
        assert any(expected in problem for problem in schema.problems({**good, **change})), change
    assert "epoch is missing" in schema.problems({k: v for k, v in good.items() if k != "epoch"})
    assert "a finished run has no step" in schema.problems({k: v for k, v in good.items() if k != "step"})
