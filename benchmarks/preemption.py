"""SIGTERM to a `fit` process: seconds to exit, and bit-identical resumes at random moments.

    python -m benchmarks.preemption stop-time --dataset gowalla --data-dir ../shared/data \\
        --stops 3 -- --epochs 6 --warmup-epochs 2
    python -m benchmarks.preemption sweep --dataset ml-1m --data-dir ../shared/data --points 12 \\
        -- --epochs 4 --warmup-epochs 2 --eval-every 2 --steps-per-execution 16

Flags after `--` go to every `fit` (default recipe otherwise). Each `fit` is
a fresh process (`python -m tf_sharpcf.fit --quiet`) writing into a scratch
folder (--dir, removed afterwards unless --keep).

stop-time: once an epoch has ended in the process (a new row in history.csv),
waits a random part of an epoch (the last one's seconds), sends SIGTERM and
times the exit; then `fit --resume` and the same again, --stops times in
all, then a last `--resume` to the end. A stop finishes the chunk under way
(a whole epoch's full batches at the default 128 per chunk), writes
checkpoints/last/ and exits 143.

sweep: per method (--methods) a reference run; then runs of the methods in
turn, each sent SIGTERM at a moment drawn uniformly over the reference's
training time (from its config.json to its metrics.json) and resumed in one
more process to the end, until --points of them were stopped by the signal
with work left (a run that finished first is checked too, and does not
count). A resume is bit-identical when metrics.json
(best, final), history.csv (every column but the seconds), both embedding
files and every variable of checkpoints/last/ equal the reference's.

Prints one line per stop or point, then JSON (--json FILE also writes it).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def fit(args: List[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "tf_sharpcf.fit", "--quiet", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "a"))


def last_line(log: Path) -> str:
    lines = [l for l in log.read_text().splitlines() if l.startswith(("stopped:", "error:"))]
    return lines[-1] if lines else ""


def _rows(history: Path) -> int:
    """Epochs in history.csv (0 before the first)."""
    try:
        return max(0, len(history.read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait_until(condition, proc: subprocess.Popen, timeout: float = 3600.0) -> bool:
    """True once `condition()` holds; False if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_time(a, data: List[str], fit_args: List[str], scratch: Path, rng: random.Random) -> Dict:
    out, log = scratch / "run", scratch / "fit.log"
    stops = []
    for i in range(a.stops):
        history = out / "history.csv"
        seen = _rows(history)
        proc = fit(["--resume", str(out), *fit_args] if i else [*data, *fit_args, "--output-dir", str(out)], log)
        if not wait_until(lambda: _rows(history) > seen, proc):
            print(f"stop {i + 1}: the run ended before an epoch did ({proc.returncode})")
            break
        epoch_seconds = float(list(csv.DictReader(open(history)))[-1]["seconds"])
        delay = rng.uniform(0, epoch_seconds)
        time.sleep(delay)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        took = time.monotonic() - sent
        stops.append({"exit": code, "seconds": round(took, 2), "epoch_seconds": round(epoch_seconds, 2),
                      "delay_after_epoch_end": round(delay, 2), "message": last_line(log)})
        print(f"stop {i + 1}: exit {code} {took:.2f} s after SIGTERM (epoch {epoch_seconds:.1f} s): "
              f"{last_line(log)}", flush=True)
        if code != 143:
            break
    code = fit(["--resume", str(out), *fit_args], log).wait()
    seconds = [s["seconds"] for s in stops]
    return {"stops": stops, "median_seconds": statistics.median(seconds) if seconds else None,
            "max_seconds": max(seconds, default=None), "final_exit": code}


def _history(out: Path):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(open(out / "history.csv"))]


def _variables(out: Path):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(out / "checkpoints" / "last" / "ckpt"))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n}


def differences(out: Path, ref: Path) -> List[str]:
    """What differs between two finished runs (empty: bit-identical)."""
    got, want = (json.loads((r / "metrics.json").read_text()) for r in (out, ref))
    diff = [k for k in ("best", "final") if got[k] != want[k]]
    if _history(out) != _history(ref):
        diff.append("history.csv")
    for name in ("user_embeddings.npy", "item_embeddings.npy"):
        if not np.array_equal(np.load(out / name), np.load(ref / name)):
            diff.append(name)
    mine, theirs = _variables(out), _variables(ref)
    diff += [n for n in sorted(theirs) if n not in mine or not np.array_equal(mine[n], theirs[n])]
    return diff


def _interrupted(point: Dict) -> bool:
    """Stopped by the signal with work left (not `came as the run finished`)."""
    return point["exit"] == 143 and " came as " not in point["stopped"]


def sweep(a, data: List[str], fit_args: List[str], scratch: Path, rng: random.Random) -> Dict:
    refs = {}
    for method in a.methods.split(","):
        out, log = scratch / f"ref-{method}", scratch / f"ref-{method}.log"
        proc = fit([*data, "--method", method, *fit_args, "--output-dir", str(out)], log)
        wait_until(lambda: (out / "config.json").exists(), proc)
        began = time.monotonic()
        wait_until(lambda: (out / "metrics.json").exists(), proc)
        refs[method] = (out, time.monotonic() - began)
        if proc.wait() != 0:
            raise SystemExit(f"reference {method} failed: {last_line(log)}")
        print(f"reference {method}: {refs[method][1]:.1f} s of training", flush=True)
    points, i = [], 0
    while sum(map(_interrupted, points)) < a.points and i < 3 * a.points:
        method = list(refs)[sum(map(_interrupted, points)) % len(refs)]
        ref, seconds = refs[method]
        out, log = scratch / f"point-{i}", scratch / f"point-{i}.log"
        i += 1
        delay = rng.uniform(0, seconds)
        proc = fit([*data, "--method", method, *fit_args, "--output-dir", str(out)], log)
        wait_until(lambda: (out / "config.json").exists(), proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
        where = last_line(log)
        resumed = fit(["--resume", str(out), *fit_args], log).wait()
        diff = differences(out, ref) if resumed == 0 else ["resume failed"]
        points.append({"method": method, "delay": round(delay, 2), "exit": code, "stopped": where,
                       "resume_exit": resumed, "bit_identical": not diff, "differences": diff})
        print(f"point {i} ({method}, SIGTERM {delay:.1f} s in): exit {code}, "
              f"{where or 'finished first'}; resume {resumed}: "
              f"{'bit-identical' if not diff else 'DIFFERS: ' + ', '.join(diff[:5])}", flush=True)
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)
    interrupted = [p for p in points if _interrupted(p)]
    return {"points": points, "interrupted": len(interrupted),
            "mid_epoch": sum(1 for p in interrupted if " after batch " in p["stopped"]),
            "bit_identical": sum(p["bit_identical"] for p in points),
            "interrupted_bit_identical": sum(p["bit_identical"] for p in interrupted)}


def main(argv: Optional[List[str]] = None) -> Dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.preemption", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("stop-time", "sweep"))
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--data-dir")
    p.add_argument("--stops", type=int, default=3, help="stop-time: SIGTERMs, one per process")
    p.add_argument("--points", type=int, default=12, help="sweep: interruption points")
    p.add_argument("--methods", default="bpr,apr,sharpcf", help="sweep: taken in turn")
    p.add_argument("--seed", type=int, help="for the random moments (default: a fresh draw)")
    p.add_argument("--dir", help="scratch folder (default: a new one under the system's temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2 ** 31)
    scratch = Path(a.dir or tempfile.mkdtemp(prefix="tf_sharpcf-preemption-"))
    scratch.mkdir(parents=True, exist_ok=True)
    data = ["--dataset", a.dataset, *(["--data-dir", os.path.abspath(a.data_dir)] if a.data_dir else [])]
    try:
        run = stop_time if a.mode == "stop-time" else sweep
        results = {"mode": a.mode, "dataset": a.dataset, "fit_args": fit_args, "seed": seed,
                   **run(a, data, fit_args, scratch, random.Random(seed))}
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
