"""The package's shape: no import cycle, no module over 300 lines, and the
command lines parse their flags before TensorFlow loads."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tf_sharpcf"
MAX_LINES = 300


def _modules():
    """{dotted name: path} of every module in the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _module_level_imports(path: Path, modules) -> set:
    """The package modules `path` imports at module level (not inside functions)."""
    deps = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tf_sharpcf"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                deps.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith("tf_sharpcf"))
    return {d for d in deps if d in modules and d != "tf_sharpcf"}


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _module_level_imports(path, modules) - {name} for name, path in modules.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_import_reader_sees_module_level_imports_only(tmp_path):
    folder = tmp_path / "tf_sharpcf"
    folder.mkdir()
    (folder / "a.py").write_text("from tf_sharpcf import b\n\ndef f():\n    from tf_sharpcf import c\n")
    (folder / "b.py").write_text("from tf_sharpcf.a import x\nimport tf_sharpcf.c\n")
    modules = {f"tf_sharpcf.{m}": folder / f"{m}.py" for m in "abc"}
    assert _module_level_imports(folder / "a.py", modules) == {"tf_sharpcf.b"}
    assert _module_level_imports(folder / "b.py", modules) == {"tf_sharpcf.a", "tf_sharpcf.c"}


def test_no_module_is_over_300_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


@pytest.mark.parametrize("module", ["tf_sharpcf.config", "tf_sharpcf.methods", "tf_sharpcf.cli",
                                    "tf_sharpcf.cli.fit", "tf_sharpcf.cli.tune", "tf_sharpcf.cli.pipeline",
                                    "tf_sharpcf.cli.analyze", "tf_sharpcf.fit", "tf_sharpcf.tune"])
def test_command_lines_import_without_tensorflow(module):
    code = f"import sys, {module}; sys.exit('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, f"importing {module} imports TensorFlow\n{done.stderr}"
