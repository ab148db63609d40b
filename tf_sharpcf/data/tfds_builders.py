"""TensorFlow Datasets builder for the registered datasets.

One builder, `sharpcf_interactions`, with one config per entry of
`tf_sharpcf.data.registry.DATASETS` (gowalla, yelp2018, amazon-book, ml-1m):

    import tf_sharpcf.data.tfds_builders  # registers the builder with TFDS
    builder = tfds.builder("sharpcf_interactions/ml-1m", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/path/to/ml-1m"))
    train = builder.as_dataset(split="train")

Examples come from `tf_sharpcf.data.registry.load_folder`, so they follow the same
canonical order, element ids and validation as the rest of the project. Each
split is written in that order (`disable_shuffling`), so reading a split with
the default `shuffle_files=False` gives the `Interactions` rows in order.

Where the files come from: the `DownloadConfig(manual_dir=...)` folder when it
is given and not empty, else `<data_dir>/downloads/manual/<config>/` when it
exists (TFDS's default manual dir is shared by all configs, hence the
subfolder); otherwise the registry's public URLs are downloaded, with the
registry's checksums, into `<data_dir>/downloads/tf_sharpcf/<config>/`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, Tuple

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)

import numpy as np
import tensorflow_datasets as tfds

from tf_sharpcf.data import registry
from tf_sharpcf.data import interactions
from tf_sharpcf.errors import DataError

LIGHTGCN_FILES = "train.txt and test.txt (LightGCN format: lines `user item item ...`)"
RATINGS_FILES = "ratings.dat (MovieLens `UserID::MovieID::Rating::Timestamp`, from ml-1m.zip)"


def manual_files(name: str) -> str:
    """The files a manual dir for dataset `name` must hold, in words."""
    if name == "ml-1m":
        return f"{LIGHTGCN_FILES}, or {RATINGS_FILES}"
    lists = [r.name for r in registry.DATASETS[name] if r.name.endswith("_list.txt")]
    return LIGHTGCN_FILES + (f" (optionally also {' and '.join(lists)})" if lists else "")


def source_folder(dl_manager, name: str) -> Path:
    """The folder to read dataset `name` from, downloading it when no manual dir has it."""
    download_dir = Path(os.fspath(dl_manager.download_dir))
    shared_manual = download_dir / "manual"
    try:
        manual = Path(os.fspath(dl_manager.manual_dir))
    except AssertionError:  # TFDS's way of saying "missing or empty"
        manual = None
    if manual == shared_manual:  # TFDS's default is shared by all configs: use its <name>/
        manual = manual / name if (manual / name).is_dir() else None
    if manual is not None:
        return manual
    return download_folder(name, download_dir / "tf_sharpcf" / name, shared_manual / name)


def download_folder(name: str, folder: Path, default_manual_dir: Path) -> Path:
    """Downloads the registry's files for `name` into `folder` (kept between builds)."""
    for remote in registry.DATASETS[name]:
        if (folder / remote.name).exists():
            continue
        try:
            registry.download(remote, folder)
        except DataError:  # a checksum mismatch: the download itself worked
            raise
        except Exception as e:  # network failures of any kind
            raise DataError(
                f"sharpcf_interactions/{name}: could not download {remote.url} "
                f"({type(e).__name__}: {e}). To build offline, put {manual_files(name)} into a folder "
                f"and pass download_config=tfds.download.DownloadConfig(manual_dir=<that folder>), "
                f"or put them into {default_manual_dir}.") from None
    if name == "ml-1m":
        registry.fetch(name, folder)  # nothing left to download: unzips ratings.dat
    return folder


class SharpCFInteractions(tfds.core.GeneratorBasedBuilder):
    """Implicit-feedback interactions with the project's canonical element ids."""

    name = "sharpcf_interactions"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Splits and order of tf_sharpcf.data.registry.load_folder."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=n, description=f"{n}: " + ", ".join(r.url for r in remotes))
        for n, remotes in registry.DATASETS.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: without network access, put the dataset's files into a folder and pass it as "
        "DownloadConfig(manual_dir=...), or into <data_dir>/downloads/manual/<config>/: "
        f"{LIGHTGCN_FILES} (+ user_list.txt / item_list.txt when available), or for ml-1m "
        f"{RATINGS_FILES}. Files found there are used instead of downloading.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("One example per (user, item) interaction. `element_id` is the row in "
                         "the canonical training table (for test, the row in the test table); "
                         "`user`/`item` are 0-based indices; `user_id`/`item_id` are the original "
                         "ids, or '' when the source files do not give them."),
            features=tfds.features.FeaturesDict({
                "element_id": np.int64,
                "user": np.int64,
                "item": np.int64,
                "user_id": tfds.features.Text(),
                "item_id": tfds.features.Text(),
            }),
            supervised_keys=None,
            homepage="https://github.com/kuandeng/LightGCN",
            disable_shuffling=True,  # element_id order is the point of these splits
        )

    def _split_generators(self, dl_manager) -> Dict[str, Iterator]:
        name = self.builder_config.name
        data = registry.load_folder(source_folder(dl_manager, name), name)
        return {
            "train": self._generate_examples(data, data.train_users, data.train_items),
            "test": self._generate_examples(data, data.test_users, data.test_items),
        }

    def _generate_examples(self, data: interactions.Interactions, users: np.ndarray,
                           items: np.ndarray) -> Iterator[Tuple[int, dict]]:
        """Yields (element_id, example) in table order."""
        user_ids = data.user_ids.tolist() if data.user_ids is not None else None
        item_ids = data.item_ids.tolist() if data.item_ids is not None else None
        for row, (user, item) in enumerate(zip(users.tolist(), items.tolist())):
            yield row, {
                "element_id": row,
                "user": user,
                "item": item,
                "user_id": user_ids[user] if user_ids is not None else "",
                "item_id": item_ids[item] if item_ids is not None else "",
            }
