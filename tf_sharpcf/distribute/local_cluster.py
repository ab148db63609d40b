"""A parameter-server cluster of local processes on 127.0.0.1: for tests and
benchmarks on one machine (a real cluster runs one `fit` per task; see
docs/scaling.md).

The caller is the chief; `start_all` starts the worker and ps servers
(`python -m tf_sharpcf.parameter_server`) and waits until each listens. Every
server exits by itself once the calling process is gone (`--parent-pid`) or
after `lifetime_s`, so a crashed test leaves no process behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

from tf_sharpcf.distribute.cluster import free_local_ports, wait_listening

REPO = Path(__file__).resolve().parents[2]


class LocalCluster:
    """chief (the caller), `workers` worker and `ps` parameter-server processes.

    log_folder: each server's stdout/stderr go to `<log_folder>/<kind><index>.log`
    (None: discarded)."""

    def __init__(self, log_folder: Optional[Path] = None, workers: int = 2, ps: int = 2,
                 lifetime_s: float = 3600, wait_s: float = 120):
        ports = iter(free_local_ports(1 + workers + ps))
        self.cluster = {"chief": [f"127.0.0.1:{next(ports)}"],
                        "worker": [f"127.0.0.1:{next(ports)}" for _ in range(workers)],
                        "ps": [f"127.0.0.1:{next(ports)}" for _ in range(ps)]}
        self.log_folder, self.lifetime_s, self.wait_s = log_folder, lifetime_s, wait_s
        self.procs: Dict[Tuple[str, int], subprocess.Popen] = {}

    def tf_config(self, kind: str, index: int = 0) -> str:
        return json.dumps({"cluster": self.cluster, "task": {"type": kind, "index": index}})

    def env(self, kind: str, index: int = 0) -> dict:
        """The environment of task (kind, index): this checkout importable, its TF_CONFIG."""
        return {**os.environ, "PYTHONPATH": str(REPO), "TF_CONFIG": self.tf_config(kind, index),
                "TF_CPP_MIN_LOG_LEVEL": "3"}

    def start(self, kind: str, index: int) -> None:
        log = (open(self.log_folder / f"{kind}{index}.log", "ab") if self.log_folder is not None
               else contextlib.nullcontext(subprocess.DEVNULL))
        with log as out:            # the server holds its own copy of the file
            self.procs[kind, index] = subprocess.Popen(
                [sys.executable, "-m", "tf_sharpcf.parameter_server", "--parent-pid", str(os.getpid()),
                 "--timeout-s", str(self.lifetime_s)], env=self.env(kind, index), stdout=out, stderr=out)

    def start_all(self) -> "LocalCluster":
        for kind in ("ps", "worker"):
            for index in range(len(self.cluster[kind])):
                self.start(kind, index)
        for kind in ("ps", "worker"):
            for index, address in enumerate(self.cluster[kind]):
                wait_listening(address, self.procs[kind, index], timeout_s=self.wait_s)
        return self

    def kill(self, kind: str, index: int) -> None:
        """Kills a server at once (SIGKILL): a lost machine, for tests."""
        proc = self.procs.pop((kind, index))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, wait_s: float = 10) -> None:
        """Stops every server: SIGTERM to all, then SIGKILL to any still
        running after `wait_s`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for key, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            del self.procs[key]

    def __enter__(self) -> "LocalCluster":
        return self.start_all()

    def __exit__(self, *exc) -> None:
        self.stop()
