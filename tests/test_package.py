"""The package installs with `pip install .` and runs from any directory."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed (needed to build without network access)")
    target = tmp_path_factory.mktemp("site")
    # A copy of what a source distribution holds, so the build writes nothing
    # into the checkout (setuptools builds in the source tree).
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "tf_sharpcf", source / "tf_sharpcf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # No build isolation and no dependencies: nothing is downloaded (CI's venv
    # already has the dependencies).
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"pip install . failed:\n{done.stdout}\n{done.stderr}")
    return target


def _run(installed, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_carries_the_kernel_source_and_runs_elsewhere(installed, tmp_path):
    where = _run(installed, tmp_path, "-c", "import tf_sharpcf, tf_sharpcf.optim.kernels as k; "
                                           "print(tf_sharpcf.__file__); print(all(s.exists() for s in k._SOURCES))")
    assert where.returncode == 0, where.stderr
    path, exists = where.stdout.split()
    assert Path(path).is_relative_to(installed) and exists == "True"
    cli = _run(installed, tmp_path, "-m", "tf_sharpcf.cli", "--help")
    assert cli.returncode == 0 and "fit" in cli.stdout and "pipeline" in cli.stdout
    fit = _run(installed, tmp_path, "-m", "tf_sharpcf.cli", "fit", "--help")
    assert fit.returncode == 0 and "--negatives" in fit.stdout, fit.stderr
    assert (installed / "bin" / "tf-sharpcf").exists()


def test_unknown_command_is_a_clear_error(capsys):
    from tf_sharpcf.cli import main
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
