"""Smoke tests: the speed benchmarks run end to end on tiny data and print
their tables (the figures themselves are not asserted: they live in README)."""
import json

import pytest

from benchmarks import epoch_time, negatives, step_time
from tf_sharpcf.optim import kernels


@pytest.mark.slow
def test_epoch_time_prints_ratios_and_writes_json(tiny_folder, tmp_path, capsys):
    out = tmp_path / "bench.json"
    epoch_time.main(["--dataset", str(tiny_folder), "--epochs", "1", "--batch-size", "16", "--dim", "4",
                     "--compare-xla", "--no-implicit", "--json", str(out)])
    table = capsys.readouterr().out
    assert "| sharpcf / bpr |" in table and "| apr-xla / bpr-xla |" in table
    results = json.loads(out.read_text())
    assert set(results["methods"]) == {"bpr", "sharpcf", "apr", "bpr-xla", "sharpcf-xla", "apr-xla"}
    assert results["eval_seconds"] > 0 and all(r["median"] > 0 for r in results["methods"].values())
    assert not results["methods"]["bpr-xla"]["row_kernel"]


def test_epoch_time_at_k_negatives_against_one(tiny_folder, tmp_path, capsys):
    out = tmp_path / "bench.json"
    epoch_time.main(["--dataset", str(tiny_folder), "--epochs", "1", "--batch-size", "16", "--dim", "4",
                     "--methods", "bpr,apr", "--negatives", "3", "--baseline-negatives", "1", "--no-implicit",
                     "--json", str(out)])
    assert "| bpr (K = 3) / bpr@k1 |" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["negatives"] == 3 and set(results["methods"]) == {"bpr", "apr", "bpr@k1"}
    assert results["bpr/bpr@k1"] > 0


@pytest.mark.slow
def test_negatives_times_fused_and_gathered_steps(tiny_folder, tmp_path, capsys):
    if kernels.gather_dot_op() is None:
        pytest.skip("the fused K-negative kernel cannot be built here")
    out = tmp_path / "neg.json"
    negatives.main(["--dataset", str(tiny_folder), "--dim", "4", "--methods", "bpr,sharpcf+softmax+cosine",
                    "--negatives", "1", "8", "--batch-sizes", "16", "--optimizers", "sgd", "--fraction", "0.5",
                    "--repeats", "1", "--shared",
                    "--json", str(out)])
    assert "fused s/ep" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert {(r["method"], r["negatives"]) for r in rows} == {(m, k) for m in ("bpr", "sharpcf+softmax+cosine")
                                                             for k in (1, 8)}
    assert all(r["fused_s_per_epoch"] > 0 and r["xla_s_per_epoch"] > 0 and r["shared_s_per_epoch"] > 0
               for r in rows)


def test_step_time_prints_every_variant(tiny_folder, capsys):
    step_time.main(["--dataset", str(tiny_folder), "--batches", "2", "--reps", "1", "--batch-size", "16",
                    "--dim", "4", "--methods", "bpr,apr"])
    table = capsys.readouterr().out
    kinds = ("kernel", "xla") if kernels.lazy_adam_op() is not None else ("xla",)
    for variant in (f"{m}-{k}" for m in ("bpr", "apr") for k in kinds):
        assert f"| {variant} |" in table


@pytest.mark.slow
def test_ps_scale_reports_every_configuration(capsys):
    """A local cluster of 2 workers (the 1-worker one is the same code, and
    costs the suite 20 s more) and one default-strategy process, on a few
    thousand synthetic rows."""
    from benchmarks import ps_scale
    ps_scale.main(["--users", "2000", "--items", "1000", "--interactions", "8000", "--dim", "8",
                   "--batch-size", "512", "--steps", "3", "--warmup-steps", "1", "--workers", "2"])
    result = json.loads(capsys.readouterr().out)
    assert "parameter_server_1_workers" not in result
    for workers in (2,):
        run = result[f"parameter_server_{workers}_workers"]
        assert run["steps_per_second"] > 0 and len(run["worker_rss_mb"]) == workers
        assert sorted(run["ps_shard_mb"]) == sorted(run["ps_rss_mb"]) == [
            "/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
    assert result["default_strategy"]["steps_per_second"] > 0
