"""The parameter-server cluster's processes: TF_CONFIG, roles, serving, local ports.

`python -m tf_sharpcf.parameter_server` (or `fit` on a worker or ps task)
starts a `tf.distribute.Server` and serves until it is stopped, or, given
`--parent-pid` / `--timeout-s`, until that process is gone or that time has
passed. The chief's side is `parameter_server.py`; `wait_for_tasks` is what
a (re)starting chief checks first, and `release_nothing_at_exit` keeps its
exit quiet, as `close_native_log` and `quiet_lost_peer_destructors` do after
the cluster lost a server.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import socket
import sys
import threading
import time
from typing import Optional

import tensorflow as tf

from tf_sharpcf.training.checkpointing import is_lost_peer
from tf_sharpcf.errors import ConfigError, TrainingError


ROLES = ("chief", "worker", "ps")
# How long a starting chief waits for every worker and ps task to accept
# connections (`wait_for_tasks`): the tasks of a restarted cluster start in
# any order, and a server takes seconds to import TensorFlow.
CONNECT_WAIT_S = 120.0


def cluster_config(environ=None) -> dict:
    """TF_CONFIG, parsed and checked -> {"cluster": {...}, "task": {"type", "index"}}.

    Raises ConfigError naming the problem: TF_CONFIG missing or not JSON, no
    `ps` / `worker` / single `chief` task, or this task not in the cluster.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise ConfigError("--strategy parameter-server needs TF_CONFIG naming the cluster's chief, worker "
                          "and ps tasks and this task (docs/scaling.md)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {err}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict):
        raise ConfigError("TF_CONFIG has no \"cluster\" object")
    for job in ("ps", "worker"):
        if not cluster.get(job):
            raise ConfigError(f"TF_CONFIG's cluster has no {job!r} tasks: --strategy parameter-server needs "
                              f"at least one ps and one worker task, got jobs {sorted(cluster)}")
    if len(cluster.get("chief") or []) != 1:
        raise ConfigError("TF_CONFIG's cluster needs exactly one 'chief' task (the coordinator), got "
                          f"{len(cluster.get('chief') or [])}")
    unknown = sorted(set(cluster) - set(ROLES))
    if unknown:
        raise ConfigError(f"TF_CONFIG's cluster has jobs {unknown}; parameter-server uses only {list(ROLES)}")
    if not isinstance(task, dict) or task.get("type") not in ROLES:
        raise ConfigError(f"TF_CONFIG's \"task\" must name this task's type, one of {list(ROLES)}, got {task!r}")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG's task index {index!r} is not in its {task['type']!r} job "
                          f"({len(cluster[task['type']])} tasks)")
    return {"cluster": cluster, "task": {"type": task["type"], "index": index}}


def role(environ=None) -> str:
    """This process's task type in TF_CONFIG: chief, worker or ps."""
    return cluster_config(environ)["task"]["type"]


def serve(parent_pid: Optional[int] = None, timeout_s: Optional[float] = None) -> None:
    """Runs this worker or ps task's server (TF_CONFIG) until it is stopped.

    parent_pid: exit when that process is gone; timeout_s: exit after that
    long. Both are for tests and scripts that must not leave servers behind;
    a real cluster's servers run until killed.
    """
    config = cluster_config()
    kind, index = config["task"]["type"], config["task"]["index"]
    if kind == "chief":
        raise ConfigError("serve() runs a worker or ps task; the chief trains (fit)")
    server = tf.distribute.Server(tf.train.ClusterSpec(config["cluster"]), job_name=kind, task_index=index,
                                  protocol="grpc", start=True)
    if parent_pid is not None or timeout_s is not None:
        _exit_when(parent_pid, timeout_s)
    print(f"{kind} {index} serving at {config['cluster'][kind][index]}", file=sys.stderr, flush=True)
    server.join()


def wait_for_tasks(config: dict, wait_s: Optional[float] = None) -> None:
    """Returns once every worker and ps task of `config` (`cluster_config`)
    accepts connections; polls for up to `wait_s` seconds (None:
    `CONNECT_WAIT_S`).

    Why: when the chief creates its strategy, TensorFlow's coordinator opens
    a context on every task, and with one task down it keeps retrying for
    minutes without a word (docs/scaling.md, "A chief restart"). A chief
    restarted after a crash reconnects to servers that kept running, so
    this is where a task that did not survive shows up.

    Raises TrainingError naming each task that does not answer, and what to
    start.
    """
    wait_s = CONNECT_WAIT_S if wait_s is None else float(wait_s)
    deadline = time.monotonic() + wait_s
    pending = [(kind, index, address) for kind in ("ps", "worker")
               for index, address in enumerate(config["cluster"][kind])]
    while True:
        pending = [task for task in pending if not _listening(task[2])]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if pending:
        names = ", ".join(f"{kind} task {index} ({address})" for kind, index, address in pending)
        raise TrainingError(
            f"the chief cannot start: {names} did not answer within {wait_s:g} s, and the "
            "coordinator needs every ps and worker task running; start "
            f"{'it' if len(pending) == 1 else 'them'} (fit --strategy parameter-server, or "
            "python -m tf_sharpcf.parameter_server, with the task's TF_CONFIG), then run this command "
            "again (after a crash of the chief: fit --resume <its run folder>)")


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except (OSError, ValueError):
        return False
    return True


def release_nothing_at_exit() -> None:
    """At this process's exit, its TensorFlow functions are not removed from
    the cluster's servers one by one. For the chief (coordinator) of a cluster.

    Why: every `tf.function` this process traced is registered on every
    worker and ps; when Python frees one (at exit, for Keras's reference
    cycles, after our last line), TensorFlow sends each server a
    RemoveFunction RPC, and each one to a server that is gone (a lost
    parameter server, a killed or restarted worker, a cluster stopped first)
    logs three lines of `E0000 ... context.cc] Failed to remove function
    remotely` after the run's own last message. Those removals are pointless
    at exit: the servers drop the whole context of a coordinator that is gone.
    This skips them the way TensorFlow's own `AtomicFunction.__del__` does
    while its module is unloaded (`RUNTIME_FUNCTION_REFS` is None); where a
    TensorFlow version lacks that attribute, nothing changes.
    """
    global _RELEASE_REGISTERED
    if not _RELEASE_REGISTERED:
        atexit.register(_skip_function_removal)
        _RELEASE_REGISTERED = True


_RELEASE_REGISTERED = False


def quiet_lost_peer_destructors() -> None:
    """From now on, an error that a TensorFlow object's destructor cannot
    raise (`Exception ignored in: <function Executor.__del__ ...>`) is not
    printed when it only says that a server is gone. For the chief
    (coordinator) of a cluster.

    Why: when a parameter server dies, an eager executor freed in another
    thread (the coordinator's) fails to wait for its remote nodes, and
    Python's default `sys.unraisablehook` prints that `UnavailableError` with
    its gRPC details, piece by piece, interleaved with and after the error
    the run raises about the same loss (CI, 2026-12-03). Any other unraisable
    exception is printed as before, by the hook that was in place.
    """
    global _UNRAISABLE_QUIET
    if _UNRAISABLE_QUIET:
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, BaseException) and is_lost_peer(value):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    _UNRAISABLE_QUIET = True


_UNRAISABLE_QUIET = False


def close_native_log() -> None:
    """After the cluster lost a server: TensorFlow's native (C++) log of this
    process goes to /dev/null; Python's `sys.stderr` keeps where it wrote.

    Why: from the loss on, the runtime logs gRPC errors about the server that
    is gone, from this thread and from the coordinator's, until the process
    ends: `Failed to remove function remotely` for each function Python frees
    (the error's traceback holds the model), `Failed to register function
    remotely` for each one traced. None of them says more than the error we
    raise, and they used to print after it. Call it once the loss is known,
    before the error is raised; the process is about to end (the command
    exits 3), and a script that goes on keeps Python's stderr (warnings,
    tracebacks) but no native log.
    """
    stream = sys.stderr
    try:
        stream.flush()
        on_fd2 = stream.fileno() == 2
    except (AttributeError, OSError, ValueError):      # replaced by a caller (a capture, a StringIO)
        on_fd2 = False
    if on_fd2:
        sys.stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding=stream.encoding, errors=stream.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
    finally:
        os.close(null)


def _skip_function_removal() -> None:
    try:
        from tensorflow.python.eager.polymorphic_function import atomic_function
    except ImportError:
        return
    if hasattr(atomic_function, "RUNTIME_FUNCTION_REFS"):
        atomic_function.RUNTIME_FUNCTION_REFS = None


def _exit_when(parent_pid, timeout_s) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def watch():
        while True:
            if parent_pid is not None and not _alive(parent_pid):
                os._exit(0)
            if deadline is not None and time.monotonic() > deadline:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_local_ports(n: int):
    """n distinct free TCP ports on 127.0.0.1, for a cluster of local processes
    (tests, benchmarks). All are bound at once so that they differ."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_listening(address: str, proc=None, timeout_s: float = 120) -> None:
    """Returns once a server accepts connections at `address` ("host:port");
    RuntimeError if `proc` (its process, if given) exits first, TimeoutError
    after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {address} exited with {proc.returncode}")
        if _listening(address):
            return
        time.sleep(0.2)
    raise TimeoutError(f"no server listening at {address} after {timeout_s} s")


def is_server_loss(err: BaseException) -> bool:
    """True for the errors the coordinator raises when a parameter server is
    gone (a lost worker is survived: its steps run again elsewhere)."""
    return is_lost_peer(err)


def describe_loss(err: tf.errors.OpError) -> str:
    """One line for a lost server: which task, if TensorFlow says (a ps task
    before a worker named in passing), and why."""
    text = err.message or ""
    task = (re.search(r"/job:(ps)/replica:\d+/task:(\d+)", text) or
            re.search(r"/job:(worker)/replica:\d+/task:(\d+)", text))
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("Graph execution error")]
    why = lines[0][:200] if lines else type(err).__name__
    who = f"{task.group(1)} task {task.group(2)}" if task else "a parameter server"
    return f"the cluster lost {who} ({type(err).__name__}: {why})"
