import os
from pathlib import Path

import numpy as np
import pytest

import tf_sharpcf  # noqa: F401  (Keras-2 switch before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TF_SHARPCF_TEST_DATA", REPO.parent / "shared" / "data"))
# The tests pin the library's own defaults (tiny data, small batches): `fit`
# starts from them, not from a dataset's preset, here and in the processes the
# tests start. tests/test_presets.py tests the presets themselves.
os.environ["TF_SHARPCF_PRESET"] = "none"


def shared_dataset(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "train.txt").exists():
        pytest.skip(f"{folder} not present")
    return folder


def write_lightgcn(folder: Path, train: dict, test: dict) -> Path:
    """Writes {user: [items]} dicts as LightGCN train.txt/test.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.txt", train), ("test.txt", test)):
        (folder / name).write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in rows.items()))
    return folder


def checkerboard(n: int = 16):
    """User u interacts with every item of u's parity; item u itself is held out.

    After training, item u must be u's top-ranked unseen item (benfred/implicit's
    checkerboard oracle).
    """
    train = {u: [i for i in range(n) if i % 2 == u % 2 and i != u] for u in range(n)}
    test = {u: [u] for u in range(n)}
    return train, test


@pytest.fixture
def tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    train, test = {}, {}
    for u in range(30):
        items = rng.choice(40, size=8, replace=False)
        train[u], test[u] = items[:6].tolist(), items[6:].tolist()
    return write_lightgcn(tmp_path / "tiny", train, test)
