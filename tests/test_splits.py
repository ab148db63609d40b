"""`analysis/splits.py` and `analyze splits`: the held-out items' popularity,
against hand-computed values, simulated random hold-outs and the real splits."""
import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset, write_lightgcn
from tf_sharpcf.analysis import splits
from tf_sharpcf.cli import analyze
from tf_sharpcf.data.interactions import split_validation
from tf_sharpcf.data.registry import load_folder
from tf_sharpcf.errors import ConfigError, DataError


def test_heldout_popularity_by_hand():
    # degrees [3, 2, 1, 0]; the training interactions' items have leave-one-out
    # degrees 2, 2, 2, 1, 1, 0 (mean 8/6); the held-out items 0, 1, 3 have 3, 2, 0 (mean 5/3).
    got = splits.heldout_popularity(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 3]), num_items=4, top=0.25)
    assert got["mean_degree"] == pytest.approx(5 / 3)
    assert got["degree_ratio"] == pytest.approx((5 / 3) / (8 / 6))
    assert got["top_share"] == pytest.approx(1 / 3)          # the top 25% of 4 items: item 0
    assert got["train_top_share"] == pytest.approx(3 / 6)


def test_a_uniformly_random_hold_out_scores_one():
    """Sparse, mildly skewed data (training degree ~8 per interaction), where
    counting each training interaction in its own item's degree would put
    the ratio near 0.88."""
    p = 1 / np.sqrt(np.arange(1, 5_001))
    items = np.random.default_rng(123).choice(5_000, 20_000, p=p / p.sum())
    ratios = []
    for seed in range(20):
        held = np.random.default_rng(seed).random(items.shape[0]) < 0.2
        ratios.append(splits.heldout_popularity(items[~held], items[held], 5_000)["degree_ratio"])
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.02)     # 0.992; 0.873 without leaving one out


def test_top_items_rounds_up_and_breaks_ties_by_the_lower_id():
    assert splits.top_items(np.array([1, 2, 2, 0]), 0.25).tolist() == [1]
    assert splits.top_items(np.array([1, 2, 2, 0]), 0.26).tolist() == [1, 2]
    assert splits.top_items(np.array([5, 0, 5]), 1.0).tolist() == [0, 2, 1]
    with pytest.raises(ConfigError, match=r"invalid --top"):
        splits.top_items(np.array([1]), 0.0)


@pytest.mark.parametrize("train, held, match", [
    ([0, 1], [], "has no test interactions"),
    ([], [0], "has no training interactions"),
    ([0, 0, 1], [4], r"item ids outside \[0, 3\): 4"),
    ([0, 0, -1], [1], r"outside \[0, 3\): -1"),
    ([0, 1, 2], [1], "each occur once"),
])
def test_bad_splits_are_named(train, held, match):
    with pytest.raises(DataError, match=match):
        splits.heldout_popularity(np.array(train, int), np.array(held, int), 3, name="test")


def test_a_hold_out_of_the_most_popular_items_scores_above_one(tmp_path):
    # Item 0 is in every user's training list and in every user's test list.
    train = {u: [0, 1 + u] for u in range(5)}
    test = {u: [0] for u in range(5)}
    data = load_folder(write_lightgcn(tmp_path / "d", train, test))
    test_row = splits.split_rows(data, top=0.15)[0]      # ceil(0.15 * 6) = 1 item: item 0
    # degrees: item 0 -> 5, items 1..5 -> 1; leave-one-out training mean (5*4 + 5*0) / 10 = 2; held-out mean 5
    assert test_row["split"] == "test" and test_row["held_out"] == 5
    assert test_row["degree_ratio"] == pytest.approx(5 / 2)
    assert test_row["top_share"] == 1.0 and test_row["train_top_share"] == 0.5


def test_split_rows_measure_the_tuners_validation_split(tiny_folder):
    data = load_folder(tiny_folder)
    rows = splits.split_rows(data, fraction=0.2, seed=3, top=0.1)
    valid = split_validation(data, 0.2, 3)
    assert rows[1]["held_out"] == valid.num_test and rows[1]["train"] == valid.num_train
    assert rows[0]["held_out"] == data.num_test and rows[0]["train"] == data.num_train


def test_analyze_splits_prints_and_writes_the_table(tiny_folder, tmp_path, capsys):
    out = tmp_path / "new" / "splits.csv"
    assert analyze.main(["splits", "--dataset", str(tiny_folder), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["split"].tolist() == ["test", "validation (0.1 of train, seed 0)"]
    printed = capsys.readouterr().out
    assert f"{table['degree_ratio'][0]:.3f}" in printed and f"{table['degree_ratio'][1]:.3f}" in printed


@pytest.mark.parametrize("flags, message", [
    (["--top", "2"], "invalid --top"),
    (["--val-fraction", "1.5"], "validation fraction must be in (0, 1)"),
])
def test_analyze_splits_rejects_bad_flags(tiny_folder, capsys, flags, message):
    assert analyze.main(["splits", "--dataset", str(tiny_folder), *flags]) != 0
    assert message in capsys.readouterr().err


def test_analyze_splits_names_an_unknown_dataset(tmp_path, capsys):
    assert analyze.main(["splits", "--dataset", str(tmp_path / "nothing")]) != 0
    assert "unknown dataset" in capsys.readouterr().err


@pytest.mark.parametrize("name, test_ratio", [("gowalla", 1.227), ("yelp2018", 0.844)])
def test_the_published_test_splits_lean_and_validation_does_not(name, test_ratio):
    """The figures docs/reproduction.md cites (to the printed 3 decimals)."""
    data = load_folder(shared_dataset(name), name)
    test, valid = splits.split_rows(data)
    assert test["degree_ratio"] == pytest.approx(test_ratio, abs=5e-4)
    assert valid["degree_ratio"] == pytest.approx(1.0, abs=0.005)
