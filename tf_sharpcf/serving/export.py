"""A finished fit run to a versioned TF Serving retriever (`export_run`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional


from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.errors import ConfigError, DataError
from tf_sharpcf.training.run_dir import load_config, load_embeddings
from tf_sharpcf.serving.retriever import ScannSettings, api_ids, build_retriever, check_settings
from tf_sharpcf.serving.layout import save_retriever


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
