"""tf_sharpcf: BPR, APR and SharpCF matrix factorisation in TensorFlow/Keras.

TensorFlow Recommenders refuses Keras 3, so the Keras-2 switch must be set
before TensorFlow is first imported anywhere in the process.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_NATIVE_LOG_LEVEL_GIVEN = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def quiet_native_logs() -> None:
    """For the command-line tools, called before TensorFlow is imported: hide
    TensorFlow's C++ log lines (on a CPU machine, `failed call to cuInit`, and
    XLA's `Compiled cluster using XLA!` with absl's preamble), unless the user
    set TF_CPP_MIN_LOG_LEVEL. Python warnings, ours among them, are not
    affected."""
    if _NATIVE_LOG_LEVEL_GIVEN or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _absl_min_log_level(2)


def _absl_min_log_level(severity: int) -> bool:
    """Call `absl::SetMinLogLevel(severity)` (0 info, 1 warning, 2 error) in
    the absl that libtensorflow_framework links in: XLA logs through it, and
    TF_CPP_MIN_LOG_LEVEL does not reach it. The symbol carries absl's LTS
    version, so it is looked up in the library's symbol table. Returns False,
    changing nothing, where the library or the symbol is not found."""
    import ctypes
    import importlib.util
    import mmap
    import re
    try:
        spec = importlib.util.find_spec("tensorflow")
        path = os.path.join(list(spec.submodule_search_locations)[0], "libtensorflow_framework.so.2")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = re.search(rb"_ZN4absl\d+lts_\d+14SetMinLogLevelENS0_18LogSeverityAtLeastE", data)
            name = found.group().decode() if found else None
        if name is None:
            return False
        setter = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError, TypeError, IndexError, ValueError):
        return False
    setter.argtypes, setter.restype = [ctypes.c_int], None
    setter(severity)
    return True

__version__ = "0.1.0"

from tf_sharpcf.errors import TfSharpCFError, ConfigError, DataError  # noqa: E402

__all__ = ["TfSharpCFError", "ConfigError", "DataError", "__version__"]
