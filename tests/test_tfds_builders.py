"""The TFDS builder writes exactly `load_folder`'s tables, in order, offline."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_sharpcf.data import registry
from tf_sharpcf.errors import DataError
from tf_sharpcf.data.tfds_builders import SharpCFInteractions

SHARED_DATA = Path(os.environ.get("TF_SHARPCF_TEST_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")

# User 0 repeats item 3 (kept once), user 2 has no items, users are out of order.
TRAIN = "1 4 0\n0 3 1 3\n2\n\n3 2 0 1\n"
TEST = "0 2\n3 4\n1 1\n"
RATINGS = ("10::200::5::978300760\n10::100::3::978302109\n7::100::4::978301968\n"
           "7::300::5::978300275\n10::300::1::978824291\n7::200::2::978302268\n"
           # users with two ratings keep both in train: every item has a training row
           "3::100::4::978300001\n3::200::4::978300002\n4::300::4::978300003\n4::400::4::978300004\n")


def write(folder: Path, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def build(config: str, data_dir: Path, manual_dir: Path | None = None):
    builder = tfds.builder(f"sharpcf_interactions/{config}", data_dir=str(data_dir))
    download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
    return builder


def read_split(builder, split: str) -> dict:
    """{feature: [n] numpy array} of a whole split, in stored order."""
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))


def test_configs_are_the_registered_datasets():
    assert [c.name for c in SharpCFInteractions.BUILDER_CONFIGS] == list(registry.DATASETS)


def test_splits_hold_load_folder_rows_in_canonical_order(tmp_path):
    folder = write(tmp_path / "manual", {"train.txt": TRAIN, "test.txt": TEST})
    builder = build("gowalla", tmp_path / "tfds", folder)
    data = registry.load_folder(folder, "gowalla")

    assert set(builder.info.splits) == {"train", "test"}
    for split, users, items in (("train", data.train_users, data.train_items),
                                ("test", data.test_users, data.test_items)):
        got = read_split(builder, split)
        np.testing.assert_array_equal(got["element_id"], np.arange(len(users)))
        np.testing.assert_array_equal(got["user"], users)
        np.testing.assert_array_equal(got["item"], items)
        assert got["user"].dtype == got["item"].dtype == got["element_id"].dtype == np.int64
        assert set(got["user_id"].tolist()) == set(got["item_id"].tolist()) == {b""}
        assert builder.info.splits[split].num_examples == len(users)


def test_id_lists_become_string_features(tmp_path):
    folder = write(tmp_path / "manual", {
        "train.txt": TRAIN, "test.txt": TEST,
        "user_list.txt": "org_id remap_id\nu0 0\nu1 1\nu2 2\nu3 3\n",
        "item_list.txt": "org_id remap_id\ni0 0\ni1 1\ni2 2\ni3 3\ni4 4\n"})
    got = read_split(build("gowalla", tmp_path / "tfds", folder), "train")
    data = registry.load_folder(folder)
    np.testing.assert_array_equal(got["user_id"].astype(str), data.user_ids[data.train_users])
    np.testing.assert_array_equal(got["item_id"].astype(str), data.item_ids[data.train_items])


def test_ratings_dat_in_manual_dir_keeps_the_original_ids(tmp_path):
    folder = write(tmp_path / "manual", {"ratings.dat": RATINGS})
    builder = build("ml-1m", tmp_path / "tfds", folder)
    data = registry.load_folder(folder)
    for split, users, items in (("train", data.train_users, data.train_items),
                                ("test", data.test_users, data.test_items)):
        got = read_split(builder, split)
        np.testing.assert_array_equal(got["user"], users)
        np.testing.assert_array_equal(got["item"], items)
        np.testing.assert_array_equal(got["user_id"].astype(str), data.user_ids[users])
        np.testing.assert_array_equal(got["item_id"].astype(str), data.item_ids[items])


def test_default_manual_dir_is_read_per_config(tmp_path):
    write(tmp_path / "tfds" / "downloads" / "manual" / "gowalla", {"train.txt": TRAIN, "test.txt": TEST})
    builder = build("gowalla", tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == registry.load_folder(
        tmp_path / "tfds" / "downloads" / "manual" / "gowalla").num_train


def test_bad_manual_dir_raises_the_readers_data_error(tmp_path):
    folder = write(tmp_path / "manual", {"train.txt": "0 1 2\n1 x\n", "test.txt": "0 3\n"})
    with pytest.raises(DataError, match=r"train\.txt:2: item id 'x'"):
        build("gowalla", tmp_path / "tfds", folder)


def test_failed_download_names_the_manual_dir_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(registry.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        build("yelp2018", tmp_path / "tfds")
    message = str(info.value)
    assert "could not download https://raw.githubusercontent.com/kuandeng/LightGCN" in message
    assert "train.txt and test.txt" in message and "manual_dir" in message
    assert str(tmp_path / "tfds" / "downloads" / "manual" / "yelp2018") in message


@pytest.mark.skipif(not (SHARED_DATA / "ml-1m" / "train.txt").exists(), reason="no shared ml-1m data")
@pytest.mark.skipif(not os.environ.get("TF_SHARPCF_SLOW_TESTS"),
                    reason="building 1M examples takes ~2-3 min; set TF_SHARPCF_SLOW_TESTS=1")
def test_ml1m_split_sizes(tmp_path):
    builder = build("ml-1m", tmp_path / "tfds", SHARED_DATA / "ml-1m")
    assert builder.info.splits["train"].num_examples == 800_193
    assert builder.info.splits["test"].num_examples == 200_016
    data = registry.load_folder(SHARED_DATA / "ml-1m")
    tail = read_split(builder, "train[-3:]")
    np.testing.assert_array_equal(tail["element_id"], np.arange(800_190, 800_193))
    np.testing.assert_array_equal(tail["user"], data.train_users[-3:])
    np.testing.assert_array_equal(tail["item"], data.train_items[-3:])
