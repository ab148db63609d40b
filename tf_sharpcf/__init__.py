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
    TensorFlow's C++ log lines (on a CPU machine, `failed call to cuInit`),
    unless the user set TF_CPP_MIN_LOG_LEVEL. Python warnings, ours among
    them, are not affected. (XLA's one-off `Compiled cluster using XLA!` line
    goes through absl, which this variable does not reach.)"""
    if not _NATIVE_LOG_LEVEL_GIVEN and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

__version__ = "0.1.0"

from tf_sharpcf.errors import TfSharpCFError, ConfigError, DataError  # noqa: E402

__all__ = ["TfSharpCFError", "ConfigError", "DataError", "__version__"]
