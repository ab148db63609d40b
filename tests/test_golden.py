"""Behaviour pinned across refactors: fixed-seed `fit` runs of each method
write the same history.csv and embeddings as the committed golden files.

The golden files in tests/golden/ were written by this test (with
TF_SHARPCF_WRITE_GOLDEN=1) before the package layout moved; a refactor that
changes what training computes fails here. Regenerate them only for a change
that is meant to alter the numbers, and say so in the commit.

Cases: conftest's tiny data set (30 users x 40 items, all three methods, K = 2) and,
when ../shared/data has it, ml-1m for 2 epochs at the default recipe (K = 4,
d = 128, batch 8192, XLA on).

Tolerance: on one machine these runs are bit-exact (tests/test_resume.py
compares with ==). Across CPUs, XLA and Eigen may pick kernels of different
vector widths, so floats are compared to 1e-4 (tiny) / 1e-3 (ml-1m) absolute.
A changed negative sample, batch order, loss or update moves the embeddings
by far more than that. ml-1m's embeddings are stored as fixed random
projections ([num_rows] per table) to keep the files small.
"""
import csv
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_dataset
from tf_sharpcf.training import run_dir
from tf_sharpcf.cli.fit import main

GOLDEN = Path(__file__).resolve().parent / "golden"
WRITE = os.environ.get("TF_SHARPCF_WRITE_GOLDEN") == "1"
TIMES = {"seconds", "eval_seconds"}

TINY = ["--dim", "8", "--batch-size", "32", "--negatives", "2", "--no-jit", "--quiet", "--eval-every", "2"]
TINY_CASES = {
    "tiny-bpr": ["--method", "bpr", "--epochs", "4", *TINY],
    "tiny-apr": ["--method", "apr", "--epochs", "5", "--warmup-epochs", "2", *TINY],
    "tiny-sharpcf": ["--method", "sharpcf", "--epochs", "6", "--warmup-epochs", "2", "--window", "2", *TINY],
}
ML1M = ["--epochs", "2", "--warmup-epochs", "1", "--eval-every", "1", "--quiet"]
ML1M_CASES = {
    "ml-1m-bpr": ["--method", "bpr", *ML1M],
    "ml-1m-apr": ["--method", "apr", *ML1M],
    "ml-1m-sharpcf": ["--method", "sharpcf", "--window", "1", *ML1M],
}


def _history(path: Path) -> dict:
    """history.csv -> {column: [values]} without the timing columns ('' -> nan)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) if r[c] != "" else np.nan for r in rows])
            for c in rows[0] if c not in TIMES}


def _projections(users: np.ndarray, items: np.ndarray) -> dict:
    """[n, d] tables -> [n] projections on a fixed random direction each."""
    rng = np.random.default_rng(1234)
    r = rng.standard_normal(users.shape[1]).astype(np.float64)
    return {"users": users.astype(np.float64) @ r, "items": items.astype(np.float64) @ r}


def _check(case: str, out: Path, full: bool, atol: float) -> None:
    folder = GOLDEN / case
    users, items = run_dir.load_embeddings(out)
    tables = {"users": users, "items": items} if full else _projections(users, items)
    if WRITE:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history.csv").write_text((out / "history.csv").read_text())
        np.savez(folder / "embeddings.npz", **tables)
        return
    if not (folder / "history.csv").exists():
        pytest.fail(f"{folder}: no golden files (write them with TF_SHARPCF_WRITE_GOLDEN=1)")
    want, got = _history(folder / "history.csv"), _history(out / "history.csv")
    assert sorted(got) == sorted(want), "history.csv columns changed"
    for column in want:
        np.testing.assert_allclose(got[column], want[column], rtol=1e-4, atol=atol, equal_nan=True,
                                   err_msg=f"{case}: history.csv column {column!r}")
    stored = np.load(folder / "embeddings.npz")
    for name, table in tables.items():
        np.testing.assert_allclose(table, stored[name], rtol=0, atol=atol * (1 if full else 10),
                                   err_msg=f"{case}: {name} embeddings")


@pytest.mark.parametrize("case", sorted(TINY_CASES))
def test_tiny_runs_match_golden(case, tiny_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["--dataset", str(tiny_folder), *TINY_CASES[case], "--output-dir", str(out)]) == 0
    _check(case, out, full=True, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ML1M_CASES))
def test_ml1m_runs_match_golden(case, tmp_path):
    folder = shared_dataset("ml-1m")
    out = tmp_path / "run"
    assert main(["--dataset", str(folder), *ML1M_CASES[case], "--output-dir", str(out)]) == 0
    _check(case, out, full=False, atol=1e-3)
