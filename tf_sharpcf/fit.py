"""`python -m tf_sharpcf.fit`: train BPR, APR or SharpCF and evaluate it.

The entry point only: the command lives in `tf_sharpcf.cli.fit`.
"""
import sys

import tf_sharpcf

if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf.cli.fit import main  # noqa: E402,F401  (after the log switch)

if __name__ == "__main__":
    sys.exit(main())
