"""ParameterServerStrategy on synthetic interactions: server memory and step rate.

    python -m benchmarks.ps_scale                                # 2M users, 1M items, 8M interactions
    python -m benchmarks.ps_scale --users 20000 --items 10000 --interactions 80000 --steps 5   # smoke

Starts, for 1 and then 2 workers (`--workers`), a local cluster of 2 parameter servers and
the workers (`python -m tf_sharpcf.parameter_server`) with a coordinator
process that trains SharpCF (dim 64 by default, K = 4, LazyAdam) on it, and
one process that trains the same data with the default strategy. Prints JSON:

* per parameter server, its resident memory (VmRSS, MB) after training
  against the bytes of the table shards it holds (embeddings, their two
  Adam slots, the trajectory table's E + 1 slots, the interaction tables);
* steps per second over `--steps` timed steps (after `--warmup-steps`), for
  1 and 2 workers and for the default strategy (XLA and the fused kernel,
  as `fit` runs it), and each process's peak memory.

All processes share this machine's cores, so the step rates measure the
protocol's overhead here, not what separate hosts give (docs/scaling.md).
Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic(users: int, items: int, interactions: int, seed: int = 0):
    """Interactions with Zipf-like item popularity, duplicates removed."""
    import numpy as np
    from tf_sharpcf.data.interactions import Interactions
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, interactions, dtype=np.int64)
    i = np.minimum((rng.pareto(1.2, interactions) * items / 50).astype(np.int64), items - 1)
    keys = np.unique(u * items + i)
    tu, ti = (keys // items).astype(np.int32), (keys % items).astype(np.int32)
    return Interactions(name="synthetic", num_users=users, num_items=items, train_users=tu, train_items=ti,
                        test_users=tu[:1], test_items=ti[:1])


def rss_mb(pid="self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e3
    return float("nan")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3
    return float("nan")


def config_for(args, strategy: str):
    from tf_sharpcf.config import Config
    return Config().replace(model={"dim": args.dim}, train={
        "method": "sharpcf", "warmup_epochs": 0, "window": 1, "negatives": args.negatives,
        "batch_size": args.batch_size, "strategy": strategy})


def time_steps(run_step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        run_step()
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    return steps / (time.perf_counter() - start)


def coordinator(args) -> dict:
    """This process is the chief of the cluster in TF_CONFIG."""
    import tf_sharpcf  # noqa: F401
    import tensorflow as tf
    from tf_sharpcf.distribute import parameter_server
    from tf_sharpcf.distribute.strategy import make_strategy
    from tf_sharpcf.training.train import build_model
    data = synthetic(args.users, args.items, args.interactions)
    config = config_for(args, "parameter-server")
    strategy = make_strategy("parameter-server")
    with strategy.scope():
        model, objective, optimizer = build_model(config, data, retry_safe=True)
        batches = parameter_server.ShardedBatches(data, args.batch_size, 0, args.negatives)
    scheduled = parameter_server.ScheduledSteps(strategy, batches)
    model.set_objective(objective)
    model.compile(optimizer=optimizer, jit_compile=False)
    scheduled.install(model)
    counter = {"n": 0}

    def run_steps(n):
        for _ in range(n):
            model.train_function(None)
            counter["n"] += 1
        scheduled.coordinator.join()

    run_steps(args.warmup_steps)
    start = time.perf_counter()
    run_steps(args.steps)
    rate = args.steps / (time.perf_counter() - start)
    shards = {}
    tables = [model.user_embedding, model.item_embedding, model.trajectory.scores, batches.users, batches.items]
    tables += [v for v in optimizer.variables if v.shape.rank == 2]
    for table in tables:
        for var in getattr(table, "variables", [table]):
            task = var.device.split("/device")[0]
            shards[task] = shards.get(task, 0) + var.shape.num_elements() * var.dtype.size
    return {"steps_per_second": rate, "shard_bytes": shards, "coordinator_peak_mb": peak_mb()}


def single(args) -> dict:
    """The same data and step on one process, default strategy, as `fit` runs it."""
    import tf_sharpcf  # noqa: F401
    import tensorflow as tf
    from tf_sharpcf.data.input_pipeline import training_dataset
    from tf_sharpcf.training.train import build_model
    data = synthetic(args.users, args.items, args.interactions)
    config = config_for(args, "default")
    model, objective, optimizer = build_model(config, data)
    model.set_objective(objective)
    model.compile(optimizer=optimizer, jit_compile=True)
    chunk = max(1, args.steps // 4)
    iterator = iter(training_dataset(data, args.batch_size, 0, 0, 100, batches_per_chunk=chunk,
                                     negatives=args.negatives))
    step = tf.function(model.train_step)

    def run():
        step(next(iterator))

    rate = time_steps(run, max(1, args.warmup_steps // chunk), 4) * chunk
    return {"steps_per_second": rate, "peak_mb": peak_mb(), "row_kernel": model.row_kernel}


def cluster_run(args, workers: int, ps: int = 2) -> dict:
    from tf_sharpcf.distribute.local_cluster import LocalCluster
    with LocalCluster(workers=workers, ps=ps, wait_s=600) as cluster:
        out = _child(args, "coordinator", cluster.env("chief", 0))
        out["ps_rss_mb"] = {f"/job:ps/replica:0/task:{i}": rss_mb(cluster.procs["ps", i].pid) for i in range(ps)}
        out["worker_rss_mb"] = [rss_mb(cluster.procs["worker", i].pid) for i in range(workers)]
        out["ps_shard_mb"] = {k: v / 1e6 for k, v in out.pop("shard_bytes").items()}
        return out


def _child(args, role: str, env) -> dict:
    argv = [sys.executable, "-m", "benchmarks.ps_scale", "--role", role, *args.passthrough]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=2_000_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--interactions", type=int, default=8_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup-steps", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="the parameter-server clusters to time, by worker count (default 1 2)")
    p.add_argument("--role", choices=("main", "coordinator", "single"), default="main", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.passthrough = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                        ("users", "items", "interactions", "dim", "batch_size", "negatives", "steps",
                         "warmup_steps")]
    if args.role == "coordinator":
        print(json.dumps(coordinator(args)))
        return
    if args.role == "single":
        print(json.dumps(single(args)))
        return
    data = synthetic(args.users, args.items, args.interactions)
    result = {"users": args.users, "items": args.items, "interactions": int(data.num_train), "dim": args.dim,
              "batch_size": args.batch_size, "negatives": args.negatives, "cores": os.cpu_count()}
    del data
    for workers in args.workers:
        result[f"parameter_server_{workers}_workers"] = cluster_run(args, workers)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    result["default_strategy"] = _child(args, "single", env)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
