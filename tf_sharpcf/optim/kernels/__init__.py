"""Custom CPU kernels, compiled from source on first use and cached.

`lazy_adam_op()` returns the `SharpcfLazyAdam` op (see lazy_adam.cc),
`gather_dot_op()` the `SharpcfGatherDot` ops with their registered gradients
(see gather_dot.cc and `gather_dot.py`) and `is_positive_op()` the sampler's
membership test (negatives.cc), or None when they cannot be built here: no
C++ compiler, a failed build, or `TF_SHARPCF_KERNELS=0` in the environment.
Callers then use their pure TensorFlow path, which computes the same numbers.
Both ops live in one shared library built from `_SOURCES`.

The shared library is built with the compile and link flags TensorFlow
reports (`tf.sysconfig`) into `$TF_SHARPCF_KERNEL_CACHE` (default
`~/.cache/tf_sharpcf/kernels`), under a name that hashes the source, the
TensorFlow version, the flags and the CPU's vector extensions, so a changed
source or a different machine gets its own build. A build takes ~20 s on 2
cores; it is written to a temporary file and renamed, so concurrent builds
never leave a half-written library.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import List

import tensorflow as tf

_SOURCES = tuple(Path(__file__).with_name(name) for name in ("lazy_adam.cc", "gather_dot.cc", "negatives.cc"))
ENV_SWITCH = "TF_SHARPCF_KERNELS"
ENV_CACHE = "TF_SHARPCF_KERNEL_CACHE"


def _cpu_flags() -> List[str]:
    """-mavx2/-mfma where this CPU has them (the library is built per machine)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((l for l in text.splitlines() if l.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f"-m{f}" for f in ("avx2", "fma") if f in have]


def _command(output: Path) -> List[str]:
    cxx = os.environ.get("CXX", "g++")
    return [cxx, "-shared", "-fPIC", "-O3", "-fno-math-errno", "-w", *_cpu_flags(), *map(str, _SOURCES),
            "-o", str(output), *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def library_path() -> Path:
    """Where this source, TensorFlow and CPU's build lives (built or not)."""
    key = hashlib.sha256(b"".join(source.read_bytes() for source in _SOURCES))
    key.update(" ".join([tf.__version__, *_command(Path("x"))]).encode())
    cache = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "tf_sharpcf" / "kernels")
    return cache / f"kernels-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compiles the library to `path` (atomically); raises on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run(_command(Path(tmp)), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {', '.join(s.name for s in _SOURCES)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _library(what: str):
    """The loaded library, or None where it cannot be built (warns, naming `what`)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        path = library_path()
        if not path.exists():
            build(path)
        return tf.load_op_library(str(path))
    except (OSError, RuntimeError, tf.errors.OpError) as err:
        warnings.warn(f"the {what} CPU kernel is unavailable, using TensorFlow ops: {err}",
                      RuntimeWarning, stacklevel=3)
        return None


@functools.lru_cache(maxsize=None)
def lazy_adam_op():
    """The SharpcfLazyAdam op, or None where it cannot be built (warns once)."""
    library = _library("fused lazy-Adam (1.3-1.5x faster BPR epochs)")
    return None if library is None else library.sharpcf_lazy_adam


@functools.lru_cache(maxsize=None)
def gather_dot_op():
    """`gather_dot.Ops`: SharpcfGatherDot (called directly), its resource-variable
    twin and its backward op, the gradients registered; or None where they
    cannot be built."""
    library = _library("K-negative scoring")
    if library is None:
        return None
    from tf_sharpcf.optim.kernels import gather_dot
    gather_dot.register_gradient(library)
    return gather_dot.Ops(library.sharpcf_gather_dot, library.sharpcf_resource_gather_dot,
                          library.sharpcf_resource_gather_dot_grad)


@functools.lru_cache(maxsize=None)
def is_positive_op():
    """The SharpcfIsPositive op (the sampler's membership test), or None."""
    library = _library("negative sampler's membership")
    return None if library is None else library.sharpcf_is_positive
