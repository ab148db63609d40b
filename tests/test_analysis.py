import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_lightgcn
from tf_sharpcf.cli import analyze
from tf_sharpcf.analysis import landscape, runs as runs_lib
from tf_sharpcf.config import Config
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.objectives.base import bpr_loss, dot

# Two users, three items, dim 2.
USERS = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
ITEMS = np.array([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]], np.float32)
# Triples (u, i, j): (0, 0, 1) has x = 1 - 0 = 1; (1, 1, 2) has x = 2 - 0 = 2.
U, POS, NEG = np.array([0, 1]), np.array([0, 1]), np.array([1, 2])


def _numpy_bpr(user_emb, item_emb, u, i, j):
    x = (user_emb[u] * item_emb[i]).sum(1) - (user_emb[u] * item_emb[j]).sum(1)
    return np.mean(np.log1p(np.exp(-x)))


def test_loss_at_zero_is_the_bpr_loss():
    losses = landscape.loss_landscape(USERS, ITEMS, U, POS, NEG, ts=[-1.0, 0.0, 1.0], seed=3)
    # mean(log1p(exp(-[1, 2]))) = (0.3132617 + 0.1269280) / 2 = 0.2200948
    assert losses[1] == pytest.approx(0.2200948, abs=1e-7)
    tf_value = bpr_loss(dot(USERS[U], ITEMS[POS]), dot(USERS[U], ITEMS[NEG])[:, None]).numpy()
    assert losses[1] == pytest.approx(float(tf_value), abs=1e-6)


def test_loss_along_matches_moving_the_tables():
    rng = np.random.default_rng(0)
    user_emb, item_emb = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    u, i, j = rng.integers(0, 4, 7), rng.integers(0, 5, 7), rng.integers(0, 5, 7)
    du, di = landscape.random_direction(user_emb, item_emb, seed=1)
    ts = [-1.5, 0.3, 2.0]
    got = landscape.loss_along(user_emb, item_emb, (du, di), u, i, j, ts, batch_size=3)
    want = [_numpy_bpr(user_emb + t * du, item_emb + t * di, u, i, j) for t in ts]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_negated_direction_mirrors_the_landscape():
    du, di = landscape.random_direction(USERS, ITEMS, seed=5)
    ts = np.linspace(-2, 2, 9)
    forward = landscape.loss_along(USERS, ITEMS, (du, di), U, POS, NEG, ts)
    backward = landscape.loss_along(USERS, ITEMS, (-du, -di), U, POS, NEG, -ts)
    np.testing.assert_allclose(forward, backward, rtol=1e-12)


def test_direction_rows_have_the_embedding_row_norms():
    users = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])  # norms 5, 0, 1
    items = np.array([[0.0, 2.0], [1.0, 1.0]])              # norms 2, √2
    du, di = landscape.random_direction(users, items, seed=0)
    np.testing.assert_allclose(np.linalg.norm(du, axis=1), [5.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(di, axis=1), [2.0, np.sqrt(2.0)], atol=1e-12)


def test_same_seed_gives_every_model_the_same_row_directions():
    rng = np.random.default_rng(1)
    a = landscape.random_direction(rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), seed=7)
    b = landscape.random_direction(rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), seed=7)
    unit = lambda d: d / np.linalg.norm(d, axis=1, keepdims=True)
    for x, y in zip(a, b):
        np.testing.assert_allclose(unit(x), unit(y), atol=1e-12)


def test_flatness_is_the_mean_rise_at_plus_and_minus_t():
    # rise@0.5 = (2 + 1.5)/2 - 1 = 0.75; rise@1 = (3 + 2)/2 - 1 = 1.5
    rise = landscape.flatness([-1, -0.5, 0, 0.5, 1], [3, 2, 1, 1.5, 2])
    assert rise == {0.5: pytest.approx(0.75), 1.0: pytest.approx(1.5)}


def test_sampled_triples_are_fixed_by_the_seed_and_negatives_are_unseen(tiny_folder):
    data = load_dataset(str(tiny_folder))
    a = landscape.sample_triples(data, 50, seed=2)
    b = landscape.sample_triples(data, 50, seed=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    users, pos, neg = a
    train = set(zip(data.train_users.tolist(), data.train_items.tolist()))
    assert all((u, i) in train for u, i in zip(users.tolist(), pos.tolist()))
    assert not any((u, j) in train for u, j in zip(users.tolist(), neg.tolist()))


# ---------------------------------------------------------------------------
# The entry point on fake run directories

# Training degrees: item 0: 3, item 1: 3, items 2, 3: 1, items 4, 5: 0.
TRAIN = {0: [0, 1, 2], 1: [0, 1], 2: [0, 3], 3: [1, 4, 5]}   # every test item has a training row
TEST = {0: [4], 1: [2, 5], 2: [1], 3: [0, 3]}


def _write_run(path, folder, method, user_emb, item_emb, lam=0.1, window=3, recall=(0.1, 0.2, 0.3)):
    path.mkdir(parents=True)
    config = Config().replace(data={"dataset": str(folder)},
                              train={"method": method, "epochs": 6, "warmup_epochs": 2, "lam": lam,
                                     "window": window})
    (path / "config.json").write_text(config.to_json())
    rows = ["epoch,loss,bpr_loss,reg_loss,trajectory_loss,adversarial_loss,seconds,"
            "recall@10,ndcg@10,recall@20,ndcg@20,eval_seconds"]
    for epoch in range(1, 7):
        r = recall[epoch // 2 - 1] if epoch % 2 == 0 else None
        metrics = f"{r / 2},{r},{r},{r},0.1" if r is not None else ",,,,"
        rows.append(f"{epoch},0.5,0.4,0.1,,,1.0,{metrics}")
    (path / "history.csv").write_text("\n".join(rows) + "\n")
    final = {"epoch": 6, "recall@10": recall[-1] / 2, "ndcg@10": recall[-1],
             "recall@20": recall[-1], "ndcg@20": recall[-1] + 0.1}
    (path / "metrics.json").write_text(json.dumps({"method": method, "best": final, "final": final}))
    np.save(path / "user_embeddings.npy", np.asarray(user_emb, np.float32))
    np.save(path / "item_embeddings.npy", np.asarray(item_emb, np.float32))
    return path


@pytest.fixture
def fake_runs(tmp_path):
    folder = write_lightgcn(tmp_path / "degrees", TRAIN, TEST)
    ones = np.ones((4, 1))
    return [
        _write_run(tmp_path / "bpr", folder, "bpr", ones, [[5], [4], [3], [2], [1], [0]], lam=0.0),
        _write_run(tmp_path / "sharpcf", folder, "sharpcf", ones, [[0], [1], [2], [3], [4], [5]],
                   window=5, recall=(0.1, 0.25, 0.35)),
    ]


def test_longtail_counts_users_and_recall_per_degree_group_by_hand(fake_runs, tmp_path):
    out = tmp_path / "fig" / "longtail.png"
    assert analyze.main(["longtail", "--runs", *map(str, fake_runs), "--k", "1",
                         "--edges", "0", "2", "4", "10", "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    # [0, 2): items 2, 3, 4, 5; test users with one: u0 (4), u1 (2, 5), u3 (3).
    # [2, 4): items 0, 1; test users u2 (1), u3 (0). [4, 10): no items.
    for _, rows in table.groupby("method"):
        assert rows["items"].tolist() == [4, 2, 0]
        assert rows["users"].tolist() == [3, 2, 0]
    # BPR (scores 5..0, top-1 = best unseen): u0 -> 3, u1 -> 2, u2 -> 1, u3 -> 0.
    #   [0, 2): (0 + 1/2 + 0) / 3; [2, 4): (1 + 1) / 2.
    # SharpCF (scores 0..5): top-1 = highest unseen: u0, u1, u2 -> 5, u3 -> 3 (4, 5 are u3's)
    #   -> [0, 2): (0 + 1/2 + 1) / 3; [2, 4): 0.
    bpr, sharp = (table[table["method"] == m]["recall@1"].tolist() for m in ("bpr", "sharpcf"))
    np.testing.assert_allclose(bpr[:2], [1 / 6, 1.0])
    np.testing.assert_allclose(sharp[:2], [0.5, 0.0])
    assert np.isnan(bpr[2]) and out.stat().st_size > 0


@pytest.mark.parametrize("command", [
    ["curves"],
    ["sensitivity", "--param", "lam"],
    ["sensitivity", "--param", "window"],
    ["landscape", "--triples", "20", "--points", "5"],
])
def test_plot_commands_write_a_png_and_its_csv(fake_runs, tmp_path, command):
    out = tmp_path / "figures" / f"{command[0]}.png"
    assert analyze.main([*command, "--runs", *map(str, fake_runs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    table = pd.read_csv(out.with_suffix(".csv"))
    expected_rows = {"curves": 6, "sensitivity": 2, "landscape": 10}[command[0]]
    assert len(table) == expected_rows
    # the landscape is of the saved model, so its label names that model's epoch
    labels = {"BPR (epoch 6)", "SharpCF (epoch 6)"} if command[0] == "landscape" else {"BPR", "SharpCF"}
    assert set(table["label"]) == labels
    if command[0] == "curves":
        assert table["warmup_epochs"].unique().tolist() == [2]
        assert table["recall@20"].tolist()[:3] == [0.1, 0.2, 0.3]
    if command[0] == "sensitivity":
        # sorted by the parameter; final Recall@20 / NDCG@20 from metrics.json
        assert table[command[2]].tolist() == {"lam": [0.0, 0.1], "window": [3, 5]}[command[2]]
        assert table["recall@20"].tolist() == [0.3, 0.35]
        assert table["split"].tolist() == ["test", "test"]
    if command[0] == "landscape":
        flat = pd.read_csv(out.with_name("landscape_flatness.csv"))
        assert list(flat.columns[-3:]) == ["loss_at_0", "rise@0.5", "rise@1"]


def test_sensitivity_marks_tuner_trials_as_validation(fake_runs):
    from tf_sharpcf.analysis import plots
    (fake_runs[0] / "trial.json").write_text("{}")          # keras-tuner's file in a trial folder
    table = plots.sensitivity_table(runs_lib.load_runs(fake_runs), "lam")
    assert dict(zip(table["run"], table["split"])) == {str(fake_runs[0]): "validation", str(fake_runs[1]): "test"}


def test_a_directory_that_is_not_a_run_is_reported(tmp_path, capsys):
    assert analyze.main(["curves", "--runs", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_saved_model_from_inside_the_warm_up_is_labelled_as_bpr(fake_runs):
    metrics = json.loads((fake_runs[1] / "metrics.json").read_text())
    metrics["best"]["epoch"] = 2  # warm-up is epochs 1..2
    (fake_runs[1] / "metrics.json").write_text(json.dumps(metrics))
    bpr, sharp = runs_lib.load_runs(fake_runs)
    assert bpr.model_label == "BPR (epoch 6)"
    assert sharp.model_label == "SharpCF (epoch 2: still the BPR warm-up model)"
