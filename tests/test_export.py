"""Export: save a tiny retriever, load it in a fresh process, compare with numpy.

The fresh process imports only TensorFlow (and `scann`, after the brute-force
models are loaded, for the ScaNN export), never tf_sharpcf or
tensorflow-recommenders, as a TF Serving host would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)
from tf_sharpcf.serving import export
from tf_sharpcf.serving import retriever
from tf_sharpcf.serving import layout
from tf_sharpcf.cli import export as export_cli
from tf_sharpcf.config import Config

try:
    import scann  # noqa: F401
    HAVE_SCANN = True
except ImportError:
    HAVE_SCANN = False

K = 5
NUM_ITEMS = 40          # ScaNN's hashing needs >= 16 points
USER_IDS = ["alice", "bob", "carol", "dave", "erin", "frank"]
ITEM_IDS = [f"poi-{i}" for i in range(NUM_ITEMS)]
# Training items per user. dave has seen 38 of 40, so only 2 unseen items exist
# for him and 3 of his 5 slots stay empty; frank has seen nothing.
TRAIN = {0: list(range(10)), 1: [1, 2, 5], 2: [0, 7, 9, 11], 3: list(range(38)), 4: [3], 5: []}
TEST = {0: [12], 1: [3]}
UNKNOWN = ["nobody", b"\xff\xfe"]   # an unknown id and bytes that are not UTF-8
QUERY = USER_IDS + UNKNOWN

subprocess_test = pytest.mark.subprocess


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, table in (("train.txt", TRAIN), ("test.txt", TEST)):
        (folder / name).write_text("".join(" ".join(map(str, [u, *items])) + "\n" for u, items in table.items()))
    (folder / "user_list.txt").write_text(
        "org_id remap_id\n" + "".join(f"{u} {i}\n" for i, u in enumerate(USER_IDS)))
    (folder / "item_list.txt").write_text(
        "org_id remap_id\n" + "".join(f"{v} {i}\n" for i, v in enumerate(ITEM_IDS)))
    return folder


def write_run(run: Path, data_folder: Path, seed: int = 0):
    """A fit-like run folder: config.json and random embeddings; returns (U, I)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(len(USER_IDS), 8)).astype(np.float32)
    items = rng.normal(size=(NUM_ITEMS, 8)).astype(np.float32)
    run.mkdir(parents=True)
    (run / "config.json").write_text(Config().replace(data={"dataset": str(data_folder)}).to_json())
    np.save(run / "user_embeddings.npy", users)
    np.save(run / "item_embeddings.npy", items)
    return users, items


def reference_top_k(users: np.ndarray, items: np.ndarray, k: int, exclude_seen: bool):
    """-> [U, k] item ids ("" for an empty slot) and [U, k] scores of U·Iᵀ, seen items at -inf."""
    scores = users @ items.T
    if exclude_seen:
        for u, seen in TRAIN.items():
            scores[u, seen] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, 1)
    ids = np.where(np.isfinite(top), np.asarray(ITEM_IDS)[order], "")
    return ids, top


# The fresh process: load each SavedModel, describe its signature, run QUERY and an empty batch.
# Brute-force models load first, before `scann` is imported for the ScaNN model.
LOADER = """
import json, sys
import tensorflow as tf
out = {{}}
for path, needs_scann in {models!r}:
    if needs_scann:
        import scann  # registers the Scann ops
    fn = tf.saved_model.load(path).signatures["serving_default"]
    spec = lambda s: [s.dtype.name, s.shape.as_list()]
    inputs = fn.structured_input_signature[1]
    result = {{"inputs": {{n: spec(s) for n, s in inputs.items()}},
              "outputs": {{n: spec(s) for n, s in fn.structured_outputs.items()}}}}
    for batch_name, batch in (("query", {query!r}), ("empty", [])):
        got = fn(user_id=tf.constant(batch, tf.string))
        result[batch_name] = {{"item_ids": [[x.decode() for x in row] for row in got["item_ids"].numpy()],
                              "scores": got["scores"].numpy().tolist(),
                              "known_user": got["known_user"].numpy().tolist(),
                              "shapes": {{n: t.shape.as_list() for n, t in got.items()}}}}
    out[path] = result
out["modules"] = sorted(m for m in ("tf_sharpcf", "tensorflow_recommenders") if m in sys.modules)
print(json.dumps(out))
"""


def load_in_fresh_process(models, cwd: Path) -> dict:
    """models: [(SavedModel folder, needs scann)] -> {folder: signature and outputs, "modules": [...]}."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    code = LOADER.format(models=[(str(p), s) for p, s in models], query=QUERY)
    # cwd holds only the test data, so tf_sharpcf is not importable from there.
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports once (brute force with and without seen items, ScaNN) and loads them in a fresh process."""
    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "data" / "tiny")
    users, items = write_run(root / "run", data)
    base = root / "savedmodels"
    bf = export.export_run(root / "run", "brute-force", "tiny", k=K, base_dir=base)
    bf_all = export.export_run(root / "run", "brute-force", "tiny", k=K, base_dir=base, exclude_seen=False)
    models = [(bf, False), (bf_all, False)]
    sc = None
    if HAVE_SCANN:
        # Brute-force-like ScaNN: every leaf searched, every candidate rescored exactly.
        exact = retriever.ScannSettings(num_leaves=2, num_leaves_to_search=2, num_reordering_candidates=NUM_ITEMS)
        sc = export.export_run(root / "run", "scann", "tiny_scann", k=K, base_dir=base, scann=exact)
        models.append((sc, True))
    served = load_in_fresh_process(models, cwd=root)
    return {"base": base, "bf": str(bf), "bf_all": str(bf_all), "scann": str(sc) if sc else None,
            "served": served, "users": users, "items": items}


# ---------------------------------------------------------------------------
# Loaded in a fresh process


@subprocess_test
def test_fresh_process_imports_neither_tf_sharpcf_nor_tfrs(exported):
    assert exported["served"]["modules"] == []


@subprocess_test
def test_signature_has_user_id_in_and_item_ids_scores_known_user_out(exported):
    served = exported["served"][exported["bf"]]
    assert served["inputs"] == {"user_id": ["string", [None]]}
    assert served["outputs"] == {"item_ids": ["string", [None, K]], "scores": ["float32", [None, K]],
                                 "known_user": ["bool", [None]]}


@subprocess_test
def test_reloaded_brute_force_gives_numpy_top_k_without_seen_items(exported):
    got = exported["served"][exported["bf"]]["query"]
    ids, scores = reference_top_k(exported["users"], exported["items"], K, exclude_seen=True)
    assert got["item_ids"][:len(USER_IDS)] == ids.tolist()
    known = np.asarray(got["scores"][:len(USER_IDS)])
    filled = ids != ""
    np.testing.assert_allclose(known[filled], scores[filled], rtol=1e-5, atol=1e-5)


@subprocess_test
def test_seen_items_are_never_returned(exported):
    got = exported["served"][exported["bf"]]["query"]["item_ids"]
    for u, seen in TRAIN.items():
        assert not set(got[u]) & {ITEM_IDS[i] for i in seen}


@subprocess_test
def test_user_with_fewer_unseen_items_than_k_gets_empty_slots(exported):
    got = exported["served"][exported["bf"]]["query"]
    dave = USER_IDS.index("dave")
    # 40 items - 38 seen = 2 unseen: poi-38, poi-39 in score order, then 3 empty slots.
    assert sorted(got["item_ids"][dave][:2]) == ["poi-38", "poi-39"]
    assert got["item_ids"][dave][2:] == ["", "", ""]
    assert got["scores"][dave][2:] == [retriever.EMPTY_SCORE] * 3


@subprocess_test
def test_unknown_and_non_utf8_users_get_popular_items_with_score_zero(exported):
    got = exported["served"][exported["bf"]]["query"]
    # Degree 3 (alice, dave and carol, bob or erin): items 0, 1, 2, 3, 5, 7, 9; every other
    # item has less. Ties go to the lower index, so the top 5 are 0, 1, 2, 3, 5.
    degree = np.bincount([i for items in TRAIN.values() for i in items], minlength=NUM_ITEMS)
    popular = [ITEM_IDS[i] for i in np.argsort(-degree, kind="stable")[:K]]
    assert popular == ["poi-0", "poi-1", "poi-2", "poi-3", "poi-5"]
    assert got["known_user"] == [True] * len(USER_IDS) + [False, False]
    for row in (-2, -1):
        assert got["item_ids"][row] == popular
        assert got["scores"][row] == [0.0] * K


@subprocess_test
def test_empty_batch_gives_empty_k_wide_outputs(exported):
    got = exported["served"][exported["bf"]]["empty"]
    assert got["shapes"] == {"item_ids": [0, K], "scores": [0, K], "known_user": [0]}


@subprocess_test
def test_no_exclude_seen_keeps_training_items(exported):
    got = exported["served"][exported["bf_all"]]["query"]
    ids, _ = reference_top_k(exported["users"], exported["items"], K, exclude_seen=False)
    assert got["item_ids"][:len(USER_IDS)] == ids.tolist()
    seen_returned = any(set(got["item_ids"][u]) & {ITEM_IDS[i] for i in TRAIN[u]} for u in TRAIN)
    assert seen_returned


@subprocess_test
@pytest.mark.skipif(not HAVE_SCANN, reason="scann is not installed")
def test_reloaded_scann_agrees_with_brute_force(exported):
    scann_got = exported["served"][exported["scann"]]
    bf_got = exported["served"][exported["bf"]]
    assert scann_got["outputs"] == bf_got["outputs"]
    assert scann_got["query"]["item_ids"] == bf_got["query"]["item_ids"]
    np.testing.assert_allclose(scann_got["query"]["scores"], bf_got["query"]["scores"], rtol=1e-4, atol=1e-4)
    assert scann_got["empty"]["shapes"] == bf_got["empty"]["shapes"]


@pytest.mark.skipif(not HAVE_SCANN, reason="scann is not installed")
def test_scann_short_results_leave_empty_slots_never_seen_or_repeated_items(tmp_path):
    import tensorflow as tf
    from tf_sharpcf.data.registry import load_dataset

    data = load_dataset(str(write_dataset(tmp_path / "data")))
    users, items = write_run(tmp_path / "run", tmp_path / "data")
    # 1 leaf of 8 searched: a leaf holds ~5 of the 40 items, so ScaNN pads its answer (NaN scores).
    narrow = retriever.ScannSettings(num_leaves=8, num_leaves_to_search=1)
    model = retriever.build_retriever(data, users, items, "scann", k=K, scann=narrow)
    got = model.serve(tf.constant(USER_IDS))
    ids = got["item_ids"].numpy().astype(str)
    scores = got["scores"].numpy()
    assert ids.shape == (len(USER_IDS), K) and not np.isnan(scores).any()
    for u, row in enumerate(ids):
        filled = [x for x in row if x]
        assert len(set(filled)) == len(filled) and not set(filled) & {ITEM_IDS[i] for i in TRAIN[u]}
        assert list(row) == filled + [""] * (K - len(filled))
        assert (scores[u, len(filled):] == retriever.EMPTY_SCORE).all()


# ---------------------------------------------------------------------------
# The TF Serving layout


def test_versions_increment_and_no_temporary_folder_remains(exported):
    model_dir = exported["base"] / "tiny"
    assert layout.versions(model_dir) == [1, 2]
    assert Path(exported["bf"]) == model_dir / "1" and Path(exported["bf_all"]) == model_dir / "2"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]
    assert (model_dir / "1" / "saved_model.pb").exists() and (model_dir / "1" / "variables").is_dir()


def test_next_version_ignores_hidden_and_non_numeric_folders(tmp_path):
    for name in ("3", "12", ".export-abc", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "99").write_text("a file, not a version")
    assert layout.next_version(tmp_path) == 13
    assert layout.next_version(tmp_path / "missing") == 1


def test_warmup_file_holds_predict_requests_for_known_users(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(exported["bf"]) / "assets.extra" / layout.WARMUP_FILE
    requests = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        assert request.model_spec.signature_name == "serving_default"
        requests.append([x.decode() for x in tf.make_ndarray(request.inputs["user_id"])])
    assert requests == [["alice", "bob"], ["alice"]]


def test_models_config_lists_every_exported_model(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = layout.write_models_config(exported["base"])
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    got = {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}
    want = {"tiny": ("/models/tiny", "tensorflow")}
    if HAVE_SCANN:
        want["tiny_scann"] = ("/models/tiny_scann", "tensorflow")
        assert "ScaNN" in path.read_text()
    assert got == want


# ---------------------------------------------------------------------------
# Pure pieces


def test_seen_items_contains_matches_a_set_lookup():
    import tensorflow as tf

    # 3 items; user 0 saw item 2, user 1 saw items 0 and 1: keys 0*3+2=2, 1*3+0=3, 1*3+1=4.
    seen = retriever.SeenItems(np.array([0, 1, 1]), np.array([2, 0, 1]), num_users=2, num_items=3)
    got = seen.contains(tf.constant([0, 1], tf.int64), tf.constant([[2, 0, 1], [2, 1, 0]]))
    assert got.numpy().tolist() == [[True, False, False], [False, True, True]]
    assert seen.count.numpy().tolist() == [1, 2] and seen.max_count == 2


def test_popular_items_sorts_by_degree_with_ties_by_index():
    from tf_sharpcf.data.interactions import Interactions

    # degrees [1, 0, 2, 2] -> items 2, 3 (tie, lower index first), then 0.
    data = Interactions("d", 2, 4, np.array([0, 0, 1, 0, 1], np.int32), np.array([0, 2, 2, 3, 3], np.int32),
                        np.zeros(0, np.int32), np.zeros(0, np.int32))
    assert retriever.popular_items(data, 3).tolist() == [2, 3, 0]


def test_api_ids_fall_back_to_the_decimal_index():
    assert retriever.api_ids(None, 3) == ["0", "1", "2"]
    assert retriever.api_ids(np.array(["a", "b"]), 2) == ["a", "b"]


def test_scann_defaults_rescore_every_candidate():
    # Gowalla: sqrt(40981) = 202.4 leaves, 10% searched -> 21; k 20 + 811 seen = 831 reordered.
    s = retriever.ScannSettings().resolve(num_items=40981, retrieve_max=831)
    assert (s.num_leaves, s.num_leaves_to_search, s.num_reordering_candidates) == (202, 21, 831)


def test_scann_refuses_a_catalogue_too_small_for_its_hashing():
    with pytest.raises(tf_sharpcf.ConfigError, match="at least 16 items"):
        retriever.ScannSettings().resolve(num_items=10, retrieve_max=5)


# ---------------------------------------------------------------------------
# Entry point errors: one line, exit code 2, nothing written


@pytest.fixture
def tiny_run(tmp_path):
    data = write_dataset(tmp_path / "data")
    write_run(tmp_path / "run", data)
    return tmp_path / "run"


@pytest.mark.parametrize("case,flags,message", [
    ("missing run", ["--run", "{tmp}/nope", "--index", "brute-force"], "invalid --run"),
    ("missing embeddings", ["--run", "{run}", "--index", "brute-force"], "item_embeddings.npy: file not found"),
    ("unknown index", ["--run", "{run}", "--index", "annoy"], "invalid --index"),
    ("k < 1", ["--run", "{run}", "--index", "brute-force", "--k", "0"], "invalid --k"),
    ("k not a number", ["--run", "{run}", "--index", "brute-force", "--k", "x"], "--k"),
])
def test_bad_input_is_one_error_line_with_exit_code_2(tiny_run, capsys, case, flags, message):
    if case == "missing embeddings":
        (tiny_run / "item_embeddings.npy").unlink()
    base = tiny_run.parent / "savedmodels"
    argv = [f.format(tmp=tiny_run.parent, run=tiny_run) for f in flags] + ["--base-dir", str(base)]
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not base.exists()


def test_main_writes_a_version_and_models_config(tiny_run, capsys):
    base = tiny_run.parent / "savedmodels"
    argv = ["--run", str(tiny_run), "--index", "brute-force", "--name", "cli", "--k", "3",
            "--base-dir", str(base), "--write-models-config"]
    assert export_cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(base / "cli" / "1")
    assert 'name: "cli"' in (base / "models.config").read_text()
    meta = json.loads((base / "cli" / "1" / "assets.extra" / layout.METADATA_FILE).read_text())
    assert (meta["index"], meta["k"], meta["exclude_seen"]) == ("brute-force", 3, True)
    assert export_cli.main(["models-config", "--base-dir", str(base), "--model-base-path", "/srv"]) == 0
    assert 'base_path: "/srv/cli"' in (base / "models.config").read_text()


@pytest.mark.subprocess
def test_two_concurrent_exports_of_one_model_make_two_complete_versions(tiny_run):
    """Two `export` processes for the same name at once: each writes its own
    hidden folder and renames it to the next free version, so they end as two
    distinct complete versions (or one would be refused), never a shared or
    half-written one."""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    base = tiny_run.parent / "savedmodels"
    argv = [sys.executable, "-m", "tf_sharpcf.export", "--run", str(tiny_run), "--index", "brute-force",
            "--name", "same", "--k", "3", "--base-dir", str(base)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    written = sorted(o[0].strip() for o in outs)
    assert written == [str(base / "same" / "1"), str(base / "same" / "2")]
    assert layout.versions(base / "same") == [1, 2]
    for version in ("1", "2"):
        folder = base / "same" / version
        assert (folder / "saved_model.pb").exists() and (folder / "assets.extra" / layout.METADATA_FILE).exists()
    assert not [p.name for p in (base / "same").iterdir() if p.name.startswith(".")]


@subprocess_test
def test_a_cosine_trained_run_serves_the_cosine_ranking_it_was_evaluated_on(tmp_path):
    """A softmax model trained on cosine scores (`--similarity cosine`): the
    served top-k is the top-k of the cosines of its best checkpoint's tables,
    the ranking its evaluation used (`MatrixFactorization.final_embeddings`)."""
    from tf_sharpcf.cli.fit import main as fit_main
    from tf_sharpcf.model import MatrixFactorization
    from tf_sharpcf.training import checkpointing
    data, run = write_dataset(tmp_path / "data" / "tiny"), tmp_path / "run"
    assert fit_main(["--dataset", str(data), "--method", "bpr", "--loss", "softmax", "--similarity", "cosine",
                     "--temperature", "0.2", "--epochs", "3", "--warmup-epochs", "0", "--dim", "8",
                     "--batch-size", "16", "--eval-every", "1", "--no-jit", "--quiet",
                     "--output-dir", str(run)]) == 0
    bf = export.export_run(run, "brute-force", "tiny_cosine", k=K, base_dir=tmp_path / "savedmodels")
    got = load_in_fresh_process([(bf, False)], cwd=tmp_path)[str(bf)]["query"]
    model = MatrixFactorization(len(USER_IDS), NUM_ITEMS, 8, similarity="cosine")
    checkpointing.restore(checkpointing.find(run / "checkpoints" / "best"), model)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)     # noqa: E731
    ids, scores = reference_top_k(unit(model.user_embedding.numpy()), unit(model.item_embedding.numpy()), K,
                                  exclude_seen=True)
    assert got["item_ids"][:len(USER_IDS)] == ids.tolist()
    known, filled = np.asarray(got["scores"][:len(USER_IDS)]), ids != ""
    np.testing.assert_allclose(known[filled], scores[filled], rtol=1e-5, atol=1e-5)
    assert np.all(np.abs(scores[filled]) <= 1 + 1e-6)
