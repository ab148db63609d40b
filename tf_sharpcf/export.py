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

Seen items are excluded inside the model: for a batch whose users have at most
S training items, the index retrieves R = min(k + S, num_items) candidates, any
candidate whose key `user * num_items + item` is in the sorted table of
training keys is dropped, and the first k survivors are returned. At most S of
the R candidates are a user's own, so at least k survive whenever R = k + S.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import tf_sharpcf

if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
import tensorflow as tf  # noqa: E402  (after tf_sharpcf/__init__.py, which sets the Keras-2 switch)
import tensorflow_recommenders as tfrs

from tf_sharpcf.config import Config
from tf_sharpcf.datasets import Interactions, load_dataset
from tf_sharpcf.errors import ConfigError, DataError, TfSharpCFError
from tf_sharpcf.atomic import atomic_write_text, fsync_path, fsync_tree
from tf_sharpcf.run_dir import load_config, load_embeddings  # noqa: F401  (the run folder's readers)

INDEXES = ("brute-force", "scann")
SIGNATURE = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "export.json"
# Score of a slot left empty (item id "") when fewer than k unseen items were
# retrieved; finite, because TF Serving's REST API writes JSON.
EMPTY_SCORE = float(np.finfo(np.float32).min)
SCANN_MIN_ITEMS = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class ScannSettings:
    """ScaNN tree + asymmetric-hashing settings; None means "derive from the catalogue".

    Defaults (tuned on Gowalla, 40,981 items; see benchmarks/export_bench.py):
    num_leaves = round(sqrt(num_items)), num_leaves_to_search = ceil(leaf_fraction
    * num_leaves), and num_reordering_candidates = max(reorder, R_max) where R_max
    = k + the most training items of any user (capped at num_items), so every
    retrieved candidate is rescored exactly.
    """

    num_leaves: Optional[int] = None
    num_leaves_to_search: Optional[int] = None
    num_reordering_candidates: Optional[int] = None
    leaf_fraction: float = 0.1
    reorder: int = 250
    training_iterations: int = 12
    dimensions_per_block: int = 2

    def resolve(self, num_items: int, retrieve_max: int) -> "ScannSettings":
        if num_items < SCANN_MIN_ITEMS:
            raise ConfigError(f"invalid --index: scann needs at least {SCANN_MIN_ITEMS} items "
                              f"(its hashing trains 16 centres per block), got {num_items}; use brute-force")
        leaves = self.num_leaves or max(1, min(num_items, round(math.sqrt(num_items))))
        search = self.num_leaves_to_search or max(1, math.ceil(self.leaf_fraction * leaves))
        reorder = self.num_reordering_candidates or min(num_items, max(self.reorder, retrieve_max))
        if not 1 <= search <= leaves <= num_items:
            raise ConfigError(f"invalid ScaNN settings: need 1 <= num_leaves_to_search ({search}) <= "
                              f"num_leaves ({leaves}) <= num_items ({num_items})")
        if reorder < retrieve_max:
            raise ConfigError(f"invalid ScaNN settings: num_reordering_candidates ({reorder}) must be >= "
                              f"k + the most seen items of a user ({retrieve_max})")
        return dataclasses.replace(self, num_leaves=leaves, num_leaves_to_search=search,
                                   num_reordering_candidates=reorder)


# ---------------------------------------------------------------------------
# The serving model


class SeenItems(tf.Module):
    """Each user's training items, for exclusion inside the graph.

    Args:
      users, items: [N] int the (user, item) pairs to exclude (empty: exclude nothing).
      num_users, num_items: id space sizes.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int):
        super().__init__(name="seen_items")
        keys = np.unique(np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64))
        # A sentinel above every key lets a searchsorted position index the table directly.
        keys = np.append(keys, np.iinfo(np.int64).max)
        self.num_items = tf.constant(num_items, tf.int64)
        self.keys = tf.Variable(keys, trainable=False, name="keys")                     # [N + 1] int64
        self.count = tf.Variable(np.bincount(np.asarray(users, np.int64), minlength=num_users)
                                 .astype(np.int32), trainable=False, name="count")      # [num_users] int32
        self.max_count = int(self.count.numpy().max(initial=0))

    def contains(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """[B] int64 users, [B, R] int items -> [B, R] bool (item in the user's training items)."""
        query = users[:, None] * self.num_items + tf.cast(items, tf.int64)              # [B, R]
        flat = tf.reshape(query, [-1])
        pos = tf.searchsorted(self.keys, flat, side="left")
        return tf.reshape(tf.gather(self.keys, pos) == flat, tf.shape(query))


class Retriever(tf.Module):
    """Raw user ids -> top-k unseen item ids, with an item index from TFRS.

    Args:
      index: a `tfrs.layers.factorized_top_k` layer indexed over the item
        embeddings with identifiers = item indices.
      user_embeddings: [num_users, dim] float32.
      user_ids, item_ids: [num_users] / [num_items] str, the ids the API speaks.
      seen: `SeenItems` to exclude (built from no pairs: exclude nothing).
      popular: [k] int item indices returned to unknown users, with score 0.
      k: items per user.
    """

    def __init__(self, index: tfrs.layers.factorized_top_k.TopK, user_embeddings: np.ndarray,
                 user_ids: Sequence[str], item_ids: Sequence[str], seen: SeenItems,
                 popular: np.ndarray, k: int):
        super().__init__(name="retriever")
        num_items = len(item_ids)
        self.k = int(k)
        self.index = index
        self.seen = seen
        self.user_embeddings = tf.Variable(np.asarray(user_embeddings, np.float32), trainable=False,
                                           name="user_embeddings")
        self.user_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(user_ids), tf.string),
                                                tf.range(len(user_ids), dtype=tf.int64)),
            default_value=-1)
        self.item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False, name="item_ids")
        self.popular_ids = tf.constant([item_ids[i] for i in popular], tf.string)
        self.num_items = num_items
        self.retrieve_max = min(self.k + seen.max_count, num_items)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> Dict[str, tf.Tensor]:
        """[B] string user ids -> item_ids [B, k] string, scores [B, k] float32, known_user [B] bool.

        Unknown ids (including bytes that are not UTF-8) get the k most popular
        training items with score 0. Slots left without an unseen item hold "" and
        `EMPTY_SCORE`.
        """
        k = self.k
        row = self.user_index.lookup(user_id)                                   # [B] int64, -1: unknown
        known = row >= 0
        users = tf.where(known, row, tf.zeros_like(row))
        seen_count = tf.where(known, tf.gather(self.seen.count, users), 0)
        retrieve = tf.minimum(k + tf.reduce_max(tf.concat([seen_count, [0]], 0)), self.num_items)
        queries = tf.gather(self.user_embeddings, users)                        # [B, dim]
        scores, items = self.index(queries, k=retrieve)                         # [B, R'], R' <= R
        items = tf.cast(items, tf.int64)
        # ScaNN pads a short result with NaN scores (and item 0).
        drop = self.seen.contains(users, items) | tf.math.is_nan(scores)
        scores = tf.where(drop, tf.constant(-np.inf, tf.float32), scores)
        short = tf.maximum(k - tf.shape(scores)[1], 0)
        scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=-np.inf)
        items = tf.pad(items, [[0, 0], [0, short]])
        # top_k keeps the index's order among equal scores, so this is "the first k survivors".
        top_scores, pos = tf.math.top_k(scores, k=k)
        top_items = tf.gather(items, pos, batch_dims=1)
        filled = top_scores > -np.inf
        ids = tf.where(filled, tf.gather(self.item_ids, top_items), "")
        top_scores = tf.where(filled, top_scores, EMPTY_SCORE)
        ids = tf.where(known[:, None], ids, self.popular_ids[None, :])
        top_scores = tf.where(known[:, None], top_scores, 0.0)
        return {"item_ids": tf.ensure_shape(ids, [None, k]),
                "scores": tf.ensure_shape(top_scores, [None, k]),
                "known_user": known}


def build_index(kind: str, item_embeddings: np.ndarray, retrieve_max: int,
                scann: Optional[ScannSettings] = None) -> tfrs.layers.factorized_top_k.TopK:
    """A TFRS top-k layer over [num_items, dim] float32 embeddings, ids = item indices."""
    candidates = tf.constant(np.asarray(item_embeddings, np.float32))
    if kind == "brute-force":
        return tfrs.layers.factorized_top_k.BruteForce(k=retrieve_max, name="brute_force").index(candidates)
    if kind == "scann":
        s = (scann or ScannSettings()).resolve(candidates.shape[0], retrieve_max)
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=retrieve_max, num_leaves=s.num_leaves, num_leaves_to_search=s.num_leaves_to_search,
            num_reordering_candidates=s.num_reordering_candidates,
            training_iterations=s.training_iterations, dimensions_per_block=s.dimensions_per_block,
            name="scann")
        return layer.index(candidates)
    raise ConfigError(f"invalid --index: must be one of {', '.join(INDEXES)}, got {kind!r}")


def api_ids(ids: Optional[np.ndarray], n: int) -> List[str]:
    """The ids the API speaks: the dataset's original ids, else the decimal index."""
    return [str(x) for x in ids] if ids is not None else [str(i) for i in range(n)]


def popular_items(data: Interactions, k: int) -> np.ndarray:
    """[k] int item indices by training degree, descending; ties by lower index."""
    return np.argsort(-data.item_degree(), kind="stable")[:k]


def build_retriever(data: Interactions, user_embeddings: np.ndarray, item_embeddings: np.ndarray,
                    index: str, k: int = 20, exclude_seen: bool = True,
                    scann: Optional[ScannSettings] = None) -> Retriever:
    check_settings(index, k=k)
    if k > data.num_items:
        raise ConfigError(f"invalid --k: must be <= the number of items ({data.num_items}), got {k}")
    if exclude_seen:
        seen = SeenItems(data.train_users, data.train_items, data.num_users, data.num_items)
    else:
        seen = SeenItems(np.zeros(0, np.int64), np.zeros(0, np.int64), data.num_users, data.num_items)
    retrieve_max = min(k + seen.max_count, data.num_items)
    return Retriever(build_index(index, item_embeddings, retrieve_max, scann), user_embeddings,
                     api_ids(data.user_ids, data.num_users), api_ids(data.item_ids, data.num_items),
                     seen, popular_items(data, k), k)


# ---------------------------------------------------------------------------
# TF Serving layout


def check_settings(index: str, name: Optional[str] = None, k: int = 20) -> None:
    """Rejects a bad index, name (None: not chosen yet) or k before anything is built or written."""
    if index not in INDEXES:
        raise ConfigError(f"invalid --index: must be one of {', '.join(INDEXES)}, got {index!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"invalid --k: must be an integer >= 1, got {k!r}")
    if name is not None and not _NAME.match(name):
        raise ConfigError(f"invalid model name {name!r}: use letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    if index == "scann":
        try:
            import scann  # noqa: F401
        except ImportError:
            raise ConfigError("the scann index needs the `scann` package (pip install scann==1.4.2)") from None


def versions(model_dir: Path) -> List[int]:
    """Numeric version folders of a TF Serving model folder, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    return (versions(model_dir) or [0])[-1] + 1


def write_warmup(path: Path, model_name: str, user_ids: Sequence[str]) -> None:
    """TF Serving's warm-up file: one PredictRequest per batch of `user_ids`.

    A TFRecord of `PredictionLog`s, read by the server from
    `<version>/assets.extra/tf_serving_warmup_requests` before it serves the version.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    batches = [list(user_ids), list(user_ids[:1])]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
            request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def save_retriever(retriever: Retriever, base_dir: Path, name: str,
                   metadata: Optional[dict] = None, warmup_users: Sequence[str] = ()) -> Path:
    """Writes `<base_dir>/<name>/<next version>/` atomically; returns that folder."""
    model_dir = Path(base_dir) / name
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".export-"))
    try:
        # The ScaNN ops live in the "Scann" namespace, which SavedModel refuses by default.
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
        tf.saved_model.save(retriever, str(tmp),
                            signatures={SIGNATURE: retriever.serve.get_concrete_function()},
                            options=options)
        extra = tmp / "assets.extra"
        extra.mkdir()
        if warmup_users:
            write_warmup(extra / WARMUP_FILE, name, warmup_users)
        (extra / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server may run as another user
        fsync_tree(tmp)       # every file and folder on disk before the version appears
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(tmp, target)
                fsync_path(model_dir, files=False)
                return target
            except OSError as e:  # another exporter took that version first
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(model_dir.iterdir()):
            model_dir.rmdir()
        raise


def exported_models(base_dir: Path) -> Dict[str, dict]:
    """{name: metadata of its latest version} for every `<name>/<n>/saved_model.pb` under base_dir."""
    out = {}
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        return out
    for model_dir in sorted(p for p in base_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        done = [v for v in versions(model_dir) if (model_dir / str(v) / "saved_model.pb").exists()]
        if done:
            meta = model_dir / str(done[-1]) / "assets.extra" / METADATA_FILE
            try:
                out[model_dir.name] = json.loads(meta.read_text())
            except (OSError, ValueError):
                out[model_dir.name] = {}
    return out


def models_config_text(base_dir: Path, model_base_path: str = "/models") -> str:
    """TF Serving's `--model_config_file` (a ModelServerConfig text proto) for base_dir.

    `model_base_path` is where base_dir is mounted in the server (Docker: `-v
    $PWD/savedmodels:/models`).
    """
    lines = ["# Written by `python -m tf_sharpcf.export models-config`.", "model_config_list {"]
    for name, meta in exported_models(base_dir).items():
        if meta.get("index") == "scann":
            lines.append("  # ScaNN index: needs a ScaNN-enabled server (stock tensorflow/serving lacks its ops)")
        path = f"{model_base_path.rstrip('/')}/{name}"
        lines += ["  config {", f"    name: {json.dumps(name)}", f"    base_path: {json.dumps(path)}",
                  '    model_platform: "tensorflow"', "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(base_dir: Path, model_base_path: str = "/models") -> Path:
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise ConfigError(f"invalid --base-dir: {base_dir} is not a directory")
    path = base_dir / "models.config"
    atomic_write_text(path, models_config_text(base_dir, model_base_path))
    return path


# ---------------------------------------------------------------------------
# Runs


def default_name(config: Config) -> str:
    """`<dataset>_<method>`, e.g. gowalla_sharpcf."""
    return f"{Path(config.data.dataset).name}_{config.train.method}"


def export_run(run_dir, index: str, name: Optional[str] = None, k: int = 20,
               base_dir="savedmodels", exclude_seen: bool = True, data_dir: Optional[str] = None,
               data: Optional[Interactions] = None, scann: Optional[ScannSettings] = None) -> Path:
    """Exports a fit run's best embeddings as `<base_dir>/<name>/<version>/`; returns that folder.

    Args:
      run_dir: a `python -m tf_sharpcf.fit --output-dir` folder.
      index: "brute-force" or "scann".
      name: the TF Serving model name (default `<dataset>_<method>`).
      k: items returned per user.
      exclude_seen: drop each user's training items from the list.
      data_dir: overrides the run's data directory; `data`: the run's data, already loaded.
    """
    run_dir = Path(run_dir)
    check_settings(index, name, k)
    if not run_dir.is_dir():
        raise ConfigError(f"invalid --run: {run_dir} is not a directory")
    config = load_config(run_dir)
    name = name or default_name(config)
    check_settings(index, name, k)
    user_emb, item_emb = load_embeddings(run_dir)
    if data is None:
        data = load_dataset(config.data.dataset, data_dir or config.data.data_dir, allow_download=False)
    if user_emb.shape[0] != data.num_users or item_emb.shape[0] != data.num_items:
        raise DataError(f"{run_dir}: embeddings are for {user_emb.shape[0]} users x {item_emb.shape[0]} "
                        f"items, but {data.name} has {data.num_users} x {data.num_items}")
    retriever = build_retriever(data, user_emb, item_emb, index, k, exclude_seen, scann)
    metadata = {"run": str(run_dir.resolve()), "dataset": data.name, "method": config.train.method,
                "index": index, "k": k, "exclude_seen": exclude_seen, "num_users": data.num_users,
                "num_items": data.num_items, "dim": int(item_emb.shape[1]),
                "retrieve_max": retriever.retrieve_max,
                "scann": None}
    if index == "scann":
        resolved = (scann or ScannSettings()).resolve(data.num_items, retriever.retrieve_max)
        metadata["scann"] = dataclasses.asdict(resolved)
    warmup = api_ids(data.user_ids, data.num_users)[:2]
    return save_retriever(retriever, Path(base_dir), name, metadata, warmup)


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
    try:
        if argv[:1] == ["models-config"]:
            args = build_config_parser().parse_args(argv[1:])
            print(write_models_config(Path(args.base_dir), args.model_base_path))
            return 0
        args = build_parser().parse_args(argv)
        path = export_run(args.run, args.index, args.name, args.k, args.base_dir,
                          exclude_seen=not args.no_exclude_seen, data_dir=args.data_dir)
        if args.write_models_config:
            write_models_config(Path(args.base_dir))
    except TfSharpCFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
