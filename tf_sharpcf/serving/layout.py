"""TF Serving's model layout: `<base-dir>/<name>/<version>/`, warm-up requests, models.config.

A version is written through a hidden temporary folder and one `os.rename`,
so a polling model server never sees a half-written version.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence


import tensorflow as tf

from tf_sharpcf.errors import ConfigError
from tf_sharpcf.atomic import atomic_write_text, fsync_path, fsync_tree
from tf_sharpcf.serving.retriever import Retriever


SIGNATURE = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "export.json"


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
