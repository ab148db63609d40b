"""`python -m tf_sharpcf.export`: a trained run as a TF Serving retriever.

    python -m tf_sharpcf.export --run runs/gowalla --index brute-force --name gowalla_sharpcf
    python -m tf_sharpcf.export models-config --base-dir savedmodels

The SavedModel maps raw user ids to the top-k item ids (signature
`serving_default`: `user_id` [None] string -> `item_ids` [None, k] string,
`scores` [None, k] float32, `known_user` [None] bool). The item index is a
tensorflow-recommenders `BruteForce` or `ScaNN` layer over the run's item
embeddings. Versions are written to `<base-dir>/<name>/<version>/` through a
hidden temporary folder and one `os.rename`, so a polling server never sees a
half-written version.

Seen items are excluded inside the model (`serving/retriever.py` says how).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf

if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported

from tf_sharpcf.cli import exits
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.serving.retriever import INDEXES
from tf_sharpcf.serving.export import export_run
from tf_sharpcf.serving.layout import write_models_config


# ---------------------------------------------------------------------------
# Entry point


class _Parser(argparse.ArgumentParser):
    """Reports bad flags as a one-line ConfigError instead of usage + exit."""

    def error(self, message):
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tf_sharpcf.export", description=__doc__.split("\n\n")[0],
                epilog="python -m tf_sharpcf.export models-config --base-dir DIR: "
                       "write DIR/models.config for every exported model (see docs/serving.md)",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="a fit --output-dir folder")
    p.add_argument("--index", required=True, help=f"item index: {' or '.join(INDEXES)}")
    p.add_argument("--name", help="TF Serving model name (default <dataset>_<method>)")
    p.add_argument("--k", type=int, default=20, help="items returned per user")
    p.add_argument("--base-dir", default="savedmodels", help="TF Serving model base folder")
    p.add_argument("--no-exclude-seen", action="store_true", help="keep each user's training items")
    p.add_argument("--data-dir", help="where the run's dataset is now (default: the run's data dir)")
    p.add_argument("--write-models-config", action="store_true",
                   help="also (re)write <base-dir>/models.config")
    return p


def build_config_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tf_sharpcf.export models-config",
                description="Write <base-dir>/models.config for every exported model.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-dir", default="savedmodels", help="TF Serving model base folder")
    p.add_argument("--model-base-path", default="/models", help="where the server sees --base-dir")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        if argv[:1] == ["models-config"]:      # our parsers raise ConfigError on a bad flag
            args = build_config_parser().parse_args(argv[1:])
            print(write_models_config(Path(args.base_dir), args.model_base_path))
            return 0
        args = build_parser().parse_args(argv)
        path = export_run(args.run, args.index, args.name, args.k, args.base_dir,
                          exclude_seen=not args.no_exclude_seen, data_dir=args.data_dir)
        if args.write_models_config:
            write_models_config(Path(args.base_dir))
        print(path)
        return 0
    return exits.run(run)


if __name__ == "__main__":
    sys.exit(main())
