"""A registered method is named only by its own modules (issue 27, item 2).

Generic code (the trainer, the warm-start service, the runner, the tuner)
reads what a method declares (`methods.Method`) and what its objective owns
(`Objective.state`), and never spells a method's name or its own log entries.
The check reads the string literals of the package's code with `ast`:
docstrings and comments are prose and may name anything.
"""
import ast
import re
from pathlib import Path

import pytest

from tf_sharpcf import methods

PACKAGE = Path(__file__).resolve().parents[1] / "tf_sharpcf"

# Modules that may name a part, beyond methods.py (the registry: every method's
# own module). The paper's default method is config.py's field default.
OWNERS = {
    "apr": {"objectives/apr.py"},
    "sharpcf": {"objectives/sharpcf.py", "objectives/trajectory.py", "config.py"},
}


def _own_names():
    """{name: the method it belongs to}: every registered method's name but
    the warm-up's (the bare loss, which every module may start from), and the
    log entries each adds to the base ones."""
    out = {}
    for m in methods.all_methods():
        if m.name == methods.WARMUP_METHOD:
            continue
        out[m.name] = m.name
        out.update({log: m.name for log in m.extra_logs})
    return out


def _prose(tree):
    """ids of the string constants that are prose: docstrings (a module's,
    class's or function's first statement) and command-line help texts (the
    value of a `help=` keyword or a "help" dict key)."""
    out, texts = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                texts.append(first.value)
        elif isinstance(node, ast.keyword) and node.arg == "help":
            texts.append(node.value)
        elif isinstance(node, ast.Dict):
            texts += [v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "help"]
    return {id(n) for text in texts for n in ast.walk(text)}


def string_literals(source: str):
    """[(line, text)] of the code's string literals, prose left out (`_prose`;
    f-strings give their literal parts)."""
    tree = ast.parse(source)
    skip = _prose(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def named_parts(source: str, names) -> list:
    """[(line, name)] for each of `names` that a string literal of `source`
    spells as a word of its own (not inside tf_sharpcf or tf-sharpcf)."""
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names))) + r")(?![\w-])")
    return [(line, m.group(1)) for line, text in string_literals(source) for m in pattern.finditer(text)]


def test_the_scan_reads_code_strings_not_prose():
    source = ('"""The sharpcf module docstring."""\n'
              'def f(x):\n    """apr in a docstring."""\n    # sharpcf in a comment\n'
              '    p.add_argument("--m", help=f"apr or {x}")\n'
              '    return x == "apr", f"{x}/trajectory_loss", "tf_sharpcf", "tf-sharpcf", {"help": "sharpcf"}\n')
    assert sorted(named_parts(source, ["apr", "sharpcf", "trajectory_loss"])) == [(6, "apr"), (6, "trajectory_loss")]


def test_the_papers_methods_are_scanned():
    names = _own_names()
    assert {"apr", "sharpcf", "adversarial_loss", "trajectory_loss"} <= set(names)


@pytest.mark.parametrize("path", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")))
def test_no_module_names_another_modules_method(path):
    if path == "methods.py":
        return
    names = _own_names()
    found = [(line, name) for line, name in named_parts((PACKAGE / path).read_text(), names)
             if path not in OWNERS.get(names[name], set())]
    assert not found, (f"tf_sharpcf/{path} names registered methods' parts (line, name): {found}; "
                       "read what the method declares (methods.Method) or its objective owns instead")
