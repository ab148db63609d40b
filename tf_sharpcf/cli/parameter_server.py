"""`python -m tf_sharpcf.parameter_server [--parent-pid P] [--timeout-s S]`: serve
this worker or ps task of TF_CONFIG (`tf_sharpcf.distribute.cluster.serve`)."""
from __future__ import annotations

import sys

import tf_sharpcf  # noqa: F401
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf.cli import exits
from tf_sharpcf.distribute import cluster


def build_parser():
    import argparse
    parser = argparse.ArgumentParser(prog="python -m tf_sharpcf.parameter_server",
                                     description="Serve this worker or ps task of TF_CONFIG.")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--timeout-s", type=float, default=None, help="exit after this many seconds")
    return parser


def main(argv=None) -> int:
    """`python -m tf_sharpcf.parameter_server [--parent-pid P] [--timeout-s S]`:
    serve this worker or ps task of TF_CONFIG."""
    args = build_parser().parse_args(argv)
    return exits.run(lambda: cluster.serve(args.parent_pid, args.timeout_s))


if __name__ == "__main__":
    sys.exit(main())
