"""tf_sharpcf: BPR, APR and SharpCF matrix factorisation in TensorFlow/Keras.

TensorFlow Recommenders refuses Keras 3, so the Keras-2 switch must be set
before TensorFlow is first imported anywhere in the process.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from tf_sharpcf.errors import TfSharpCFError, ConfigError, DataError  # noqa: E402

__all__ = ["TfSharpCFError", "ConfigError", "DataError", "__version__"]
