"""`analysis/splits.py` and `analyze splits`: the held-out items' popularity,
against hand-computed values and the splits the tuner and the tests use."""
import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset, write_lightgcn
from tf_sharpcf.analysis import splits
from tf_sharpcf.cli import analyze
from tf_sharpcf.data.interactions import split_validation
from tf_sharpcf.data.registry import load_folder


def test_heldout_popularity_by_hand():
    # degrees [3, 2, 1, 0]; the training interactions' items have degrees
    # 3, 3, 3, 2, 2, 1 (mean 14/6); the held-out items 0, 1, 3 have 3, 2, 0 (mean 5/3).
    got = splits.heldout_popularity(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 3]), num_items=4, top=0.25)
    assert got["mean_degree"] == pytest.approx(5 / 3)
    assert got["degree_ratio"] == pytest.approx((5 / 3) / (14 / 6))
    assert got["top_share"] == pytest.approx(1 / 3)          # the top 25% of 4 items: item 0
    assert got["train_top_share"] == pytest.approx(3 / 6)


def test_top_items_rounds_up_and_breaks_ties_by_the_lower_id():
    assert splits.top_items(np.array([1, 2, 2, 0]), 0.25).tolist() == [1]
    assert splits.top_items(np.array([1, 2, 2, 0]), 0.26).tolist() == [1, 2]
    assert splits.top_items(np.array([5, 0, 5]), 1.0).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="top must be in"):
        splits.top_items(np.array([1]), 0.0)


def test_a_hold_out_of_the_most_popular_items_scores_above_one(tmp_path):
    # Item 0 is in every user's training list and in every user's test list.
    train = {u: [0, 1 + u] for u in range(5)}
    test = {u: [0] for u in range(5)}
    data = load_folder(write_lightgcn(tmp_path / "d", train, test))
    test_row = splits.split_rows(data, top=0.15)[0]      # ceil(0.15 * 6) = 1 item: item 0
    # degrees: item 0 -> 5, items 1..5 -> 1; training mean (5*5 + 5*1) / 10 = 3; held-out mean 5
    assert test_row["split"] == "test" and test_row["held_out"] == 5
    assert test_row["degree_ratio"] == pytest.approx(5 / 3)
    assert test_row["top_share"] == 1.0 and test_row["train_top_share"] == 0.5


def test_split_rows_measure_the_tuners_validation_split(tiny_folder):
    data = load_folder(tiny_folder)
    rows = splits.split_rows(data, fraction=0.2, seed=3, top=0.1)
    valid = split_validation(data, 0.2, 3)
    assert rows[1]["held_out"] == valid.num_test and rows[1]["train"] == valid.num_train
    assert rows[1]["degree_ratio"] == pytest.approx(
        splits.heldout_popularity(valid.train_items, valid.test_items, data.num_items, 0.1)["degree_ratio"])
    assert rows[0]["held_out"] == data.num_test and rows[0]["train"] == data.num_train


def test_analyze_splits_prints_and_writes_the_table(tiny_folder, tmp_path, capsys):
    out = tmp_path / "new" / "splits.csv"
    assert analyze.main(["splits", "--dataset", str(tiny_folder), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["split"].tolist() == ["test", "validation (0.1 of train, seed 0)"]
    assert "degree_ratio" in capsys.readouterr().out


def test_analyze_splits_rejects_a_bad_top(tiny_folder, capsys):
    assert analyze.main(["splits", "--dataset", str(tiny_folder), "--top", "2"]) != 0
    assert "invalid --top" in capsys.readouterr().err


def test_gowalla_test_split_leans_to_popular_items():
    """The measured fact docs/reproduction.md cites: Gowalla's published test
    split holds out more popular items than a random hold-out does."""
    data = load_folder(shared_dataset("gowalla"), "gowalla")
    test, valid = splits.split_rows(data)
    assert test["degree_ratio"] > 1.15 and abs(valid["degree_ratio"] - 1) < 0.05
