"""A sweep file, read as data (ast), never run: code/sweeps/<NAME>.py holds lines
`name = [value, ...]` (every name a config.py name, values Python literals of config.py's
types) and `runs_per_point = n`. Its grid, its points (the product of the values, in the
file's order), each point's config.py text and tag. Standard library only.
"""
import ast
import hashlib
import itertools
import json
from pathlib import Path

from cli import UserError
from names import SWEEP_NAME, is_tag
from repo import git

SWEEPS = Path("code/sweeps")


def check_name(name):
    if not name:
        raise UserError("NAME is missing: name the sweep, e.g. make sweep NAME=lr (its file: code/sweeps/lr.py)")
    if not SWEEP_NAME.fullmatch(name):
        raise UserError(f"NAME={name!r} is not a sweep name: use letters, digits, '_' and '-' (at most 40)")
    return name


def committed(path):
    """The text of `path` at HEAD; None where HEAD has no such file."""
    shown = git("show", f"HEAD:{path}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def config_names(text):
    """{name: the Assign node} of config.py's plain `name = value` lines."""
    return {node.targets[0].id: node for node in ast.parse(text).body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}


def parse_sweep(name, text, config):
    """(grid: [(config name, [values])], runs per point), or a UserError naming the bad line."""
    path = SWEEPS / f"{name}.py"
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise UserError(f"{path} line {error.lineno}: not Python ({error.msg}): write lines like lr = [0.1, 0.01]")
    known, grid, runs, wrong = config_names(config), [], 1, []
    for node in tree.body:
        where = f"{path} line {node.lineno}"
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UserError(f"{where}: only `name = [value, ...]` lines and runs_per_point = n belong in a sweep file")
        key = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise UserError(f"{where}: the value of {key} is not a Python literal: write numbers, strings, lists ...")
        if key == "runs_per_point":
            if type(value) is not int or not 1 <= value <= 1000:
                raise UserError(f"{where}: runs_per_point = {value!r} must be a whole number from 1 to 1000")
            runs = value
            continue
        if key not in known:
            raise UserError(f"{where}: {key} is not a name of code/config.py: sweep only its values")
        if not isinstance(value, list) or not value:
            raise UserError(f"{where}: {key} = {value!r} must be a non-empty list of the values to try")
        if any(key == other for other, _ in grid):
            raise UserError(f"{where}: {key} is given twice")
        if len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            raise UserError(f"{where}: {key} lists a value twice")
        wrong += [f"{where}: {problem}" for problem in wrong_types(key, value, known[key])]
        grid.append((key, value))
    if wrong:  # every bad value, one line each, before any tag is made
        raise UserError("\nerror: ".join(wrong))
    if not grid:
        raise UserError(f"{path} names no config value to sweep: add a line like lr = [0.1, 0.01]")
    return grid, runs


def wrong_types(key, values, default_node):
    """What is wrong with each value of `values` for config.py's `key`: a value of another type
    than config.py's own (an int where it has an int, a number where a float, ...) would make a
    point whose every run fails, again at every make sweep."""
    try:
        default = ast.literal_eval(default_node.value)
    except ValueError:
        return []  # not a literal in config.py: nothing to compare with
    if default is None:
        return []
    kinds = [(bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,)), (list, (list, tuple)),
             (tuple, (list, tuple)), (dict, (dict,))]
    allowed = next((ok for kind, ok in kinds if isinstance(default, kind)), None)
    if allowed is None:
        return []
    return [f"{key} = {value!r} is a {type(value).__name__}, but config.py's {key} = {default!r} is a "
            f"{type(default).__name__}: give values of that type"
            for value in values
            if not isinstance(value, allowed) or (isinstance(value, bool) and not isinstance(default, bool))]


def points(grid):
    """Every combination, in the file's order: [{name: value}]."""
    names = [name for name, _ in grid]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in grid))]


def with_values(config, values):
    """config.py's text with only these values changed (each value's span, comments kept)."""
    lines = config.splitlines(keepends=True)
    nodes = config_names(config)
    for name, value in sorted(values.items(), key=lambda item: -nodes[item[0]].lineno):
        node = nodes[name].value
        first, last = node.lineno - 1, node.end_lineno - 1
        head, tail = lines[first][:node.col_offset], lines[last][node.end_col_offset:]
        lines[first:last + 1] = [head + repr(value) + tail]
    return "".join(lines)


def point_tag(name, values):
    """A tag a person can read (s-lr0.01-channels32), or s-<hash of the values>."""
    readable = name + "".join(f"-{key}{value}" for key, value in values.items())
    if is_tag(readable) and all(isinstance(v, (int, float, str)) for v in values.values()):
        return readable
    return f"{name}-{hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]}"
