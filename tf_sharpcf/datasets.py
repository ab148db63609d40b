"""Interaction data: one `Interactions` type, readers, the dataset registry.

Every dataset becomes an `Interactions`: a canonical training table (one row
per (user, item) interaction, in file order; the row index is the interaction's
`element_id`, stable across runs and machines for the same files) and a test
table. Readers differ per format (LightGCN `train.txt`/`test.txt`, MovieLens
`ratings.dat`); everything after `Interactions` is shared.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tf_sharpcf.errors import DataError

# Ids are stored as int32 and index embedding tables.
MAX_ID = 2**31 - 2
_MAX_ID_DIGITS = len(str(MAX_ID))
LIGHTGCN_URL = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/{name}/{file}"
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


@dataclasses.dataclass(frozen=True)
class Interactions:
    """A dataset's train/test split.

    Attributes:
      name: a label for logs and outputs.
      num_users, num_items: sizes of the id spaces (max id + 1).
      train_users, train_items: [N] int32, the canonical training table; row r
        is the interaction with element_id r.
      test_users, test_items: [M] int32 held-out interactions.
      user_ids, item_ids: optional [num_users] / [num_items] original ids (str)
        of each index, from `user_list.txt` / `item_list.txt` or `ratings.dat`.
      cold_test_users, cold_test_items: distinct test users / items the
        source had with no training interaction; their test interactions
        were left out of test (`without_cold_test`).
    """

    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    user_ids: Optional[np.ndarray] = None
    item_ids: Optional[np.ndarray] = None
    cold_test_users: int = 0
    cold_test_items: int = 0

    @property
    def num_train(self) -> int:
        return int(self.train_users.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_users.shape[0])

    def item_degree(self) -> np.ndarray:
        """[num_items] int64: training interactions per item."""
        return np.bincount(self.train_items, minlength=self.num_items)

    def user_degree(self) -> np.ndarray:
        """[num_users] int64: training interactions per user."""
        return np.bincount(self.train_users, minlength=self.num_users)

    def train_keys(self) -> np.ndarray:
        """[N] int64 sorted `user * num_items + item`, for membership tests."""
        return np.sort(self.train_users.astype(np.int64) * self.num_items + self.train_items)

    def describe(self) -> str:
        density = (self.num_train + self.num_test) / max(1, self.num_users * self.num_items)
        return (f"{self.name}: {self.num_users:,} users, {self.num_items:,} items, "
                f"{self.num_train:,} train, {self.num_test:,} test, density {density:.3%}")


# ---------------------------------------------------------------------------
# Readers


# Line breaks are "\n", "\r\n" or "\r", as editors and `grep -n` count them.
# str.splitlines also breaks at \v, \f, \x1c-\x1e, \x85, U+2028 and U+2029,
# which would shift every reported line number after such a character.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Ids are separated by spaces or tabs only; any other character (a control
# byte, a no-break space) stays inside a token and is reported as a bad id.
_TOKEN_SEP = re.compile(r"[ \t]+")
_OTHER_SPACE = re.compile(r"[^\S \t]")  # whitespace that str.split would also split at
# MovieLens ratings ("4", "3.5") and Unix timestamps, in ASCII digits.
_RATING = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TIMESTAMP = re.compile(r"-?[0-9]+")


def _line_number(text_before: str) -> int:
    """1-based number of the line holding the character after `text_before`."""
    return len(_LINE_BREAK.split(text_before))


def _tokens(line: str) -> List[str]:
    if _OTHER_SPACE.search(line) is None:  # the common case, at str.split's speed
        return line.split()
    return [t for t in _TOKEN_SEP.split(line) if t]


def _read_text(path: Path) -> List[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark is skipped)."""
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise DataError(f"{path}: not a regular file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = _line_number(raw[: e.start].decode("utf-8"))
        raise DataError(f"{path}:{line}: not valid UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        line = _line_number(text[: text.index("\x00")])
        raise DataError(f"{path}:{line}: NUL byte in a text file")
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":  # the break ending the last line does not start a new one
        lines.pop()
    return lines


def _parse_id(token: str, path: Path, lineno: int, what: str) -> int:
    if not (token.isascii() and token.isdigit()):
        raise DataError(f"{path}:{lineno}: {what} id {token[:40]!r} is not a non-negative integer")
    # Measure long tokens before int(), which refuses strings of more than 4300 digits.
    digits = (token.lstrip("0") or "0") if len(token) > _MAX_ID_DIGITS else token
    value = int(digits) if len(digits) <= _MAX_ID_DIGITS else MAX_ID + 1
    if value > MAX_ID:
        raise DataError(f"{path}:{lineno}: {what} id {token[:40]} is too large (max {MAX_ID})")
    return value


def read_lightgcn_file(path: Path) -> Tuple[np.ndarray, np.ndarray, Dict[int, int]]:
    """Reads `user item item ...` lines (ids separated by spaces or tabs).

    Returns [n] int32 users, [n] int32 items (file order; a repeated (user,
    item) pair keeps its first occurrence) and {user: first line number}.
    Blank lines are skipped; a user may have no items.
    """
    path = Path(path)
    users: List[int] = []
    items: List[int] = []
    first_line: Dict[int, int] = {}
    seen = set()
    for lineno, line in enumerate(_read_text(path), start=1):
        tokens = _tokens(line)
        if not tokens:
            continue
        user = _parse_id(tokens[0], path, lineno, "user")
        first_line.setdefault(user, lineno)
        for tok in tokens[1:]:
            item = _parse_id(tok, path, lineno, "item")
            key = (user, item)
            if key in seen:
                continue
            seen.add(key)
            users.append(user)
            items.append(item)
    if not first_line:
        raise DataError(f"{path}: empty file (no user lines)")
    return np.asarray(users, np.int32), np.asarray(items, np.int32), first_line


def read_id_list(path: Path) -> np.ndarray:
    """Reads LightGCN's `org_id remap_id` list into [n] str, index = remap id."""
    path = Path(path)
    mapping: Dict[int, str] = {}
    for lineno, line in enumerate(_read_text(path), start=1):
        tokens = _tokens(line)
        if not tokens or (lineno == 1 and tokens[-1] == "remap_id"):
            continue
        if len(tokens) != 2:
            raise DataError(f"{path}:{lineno}: expected 'org_id remap_id', got {line[:60]!r}")
        remap = _parse_id(tokens[1], path, lineno, "remap")
        if remap in mapping:
            raise DataError(f"{path}:{lineno}: remap id {remap} listed twice")
        mapping[remap] = tokens[0]
    n = max(mapping) + 1 if mapping else 0
    if len(mapping) != n:
        raise DataError(f"{path}: remap ids are not 0..{n - 1} without gaps")
    return np.asarray([mapping[i] for i in range(n)])


def load_lightgcn(folder: Path, name: Optional[str] = None) -> Interactions:
    """Loads `train.txt`/`test.txt` (+ optional `user_list.txt`/`item_list.txt`)."""
    folder = Path(folder)
    train_path, test_path = folder / "train.txt", folder / "test.txt"
    tr_u, tr_i, train_lines = read_lightgcn_file(train_path)
    te_u, te_i, test_lines = read_lightgcn_file(test_path)
    if tr_u.size == 0:
        raise DataError(f"{train_path}: no training interactions")
    if te_u.size == 0:
        raise DataError(f"{test_path}: no test interactions")
    num_users = max(max(train_lines), max(test_lines)) + 1
    num_items = int(max(tr_i.max(), te_i.max() if te_i.size else 0)) + 1
    check_dense_ids(num_users, np.concatenate([tr_u, te_u]), "user", train_path, test_path, tr_u, te_u,
                    train_lines, test_lines)
    check_dense_ids(num_items, np.concatenate([tr_i, te_i]), "item", train_path, test_path, tr_u, te_u,
                    train_lines, test_lines, items=(tr_i, te_i))
    user_ids = item_ids = None
    if (folder / "user_list.txt").exists():
        user_ids = read_id_list(folder / "user_list.txt")
        if user_ids.size < num_users:
            raise DataError(f"{folder / 'user_list.txt'}: maps {user_ids.size} users, data has {num_users}")
        num_users = int(user_ids.size)
    if (folder / "item_list.txt").exists():
        item_ids = read_id_list(folder / "item_list.txt")
        if item_ids.size < num_items:
            raise DataError(f"{folder / 'item_list.txt'}: maps {item_ids.size} items, data has {num_items}")
        num_items = int(item_ids.size)
    data = Interactions(name or folder.name, num_users, num_items, tr_u, tr_i, te_u, te_i,
                        user_ids, item_ids)
    check_negatives_exist(data, train_path)
    return without_cold_test(data, test_path)


# Ids index embedding rows, so the largest id sets a table's size. A table
# far larger than the ids in use (and than this bound) means sparse raw ids:
# refused before anything is allocated.
MAX_SPARSE_ROWS = 10_000_000


def check_dense_ids(rows: int, ids: np.ndarray, kind: str, train_path: Path, test_path: Path,
                    tr_u, te_u, train_lines, test_lines, items=None) -> None:
    """DataError naming the file, line and id when `rows` (largest id + 1) is
    over MAX_SPARSE_ROWS and over 10x the distinct ids: LightGCN-format ids
    must be dense 0-based indices."""
    distinct = np.unique(ids).size
    if rows <= MAX_SPARSE_ROWS or rows <= 10 * distinct:
        return
    largest = rows - 1
    if items is None:
        in_train = largest in train_lines
        path, line = (train_path, train_lines[largest]) if in_train else (test_path, test_lines[largest])
    else:
        tr_i, te_i = items
        hit = np.flatnonzero(tr_i == largest)
        user, path, lines = (int(tr_u[hit[0]]), train_path, train_lines) if hit.size else \
            (int(te_u[np.flatnonzero(te_i == largest)[0]]), test_path, test_lines)
        line = lines[user]
    raise DataError(f"{path}:{line}: {kind} id {largest} would make a {rows:,}-row embedding table for "
                    f"{distinct:,} distinct {kind}s: ids must be dense 0-based indices (remap them, e.g. "
                    f"with the order of a {kind}_list.txt)")


def read_ratings(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Reads MovieLens `UserID::MovieID::Rating::Timestamp` into original-id arrays."""
    path = Path(path)
    users, items = [], []
    for lineno, line in enumerate(_read_text(path), start=1):
        line = line.strip(" \t")
        if not line:
            continue
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 'UserID::MovieID::Rating::Timestamp', "
                            f"got {line[:60]!r}")
        users.append(_parse_id(parts[0], path, lineno, "user"))
        items.append(_parse_id(parts[1], path, lineno, "movie"))
        if not (_RATING.fullmatch(parts[2]) and _TIMESTAMP.fullmatch(parts[3])):
            raise DataError(f"{path}:{lineno}: rating {parts[2][:20]!r} or timestamp {parts[3][:20]!r} "
                            "is not a number")
    if not users:
        raise DataError(f"{path}: empty file (no ratings)")
    return np.asarray(users, np.int64), np.asarray(items, np.int64)


def load_ratings(path: Path, test_fraction: float = 0.2, seed: int = 20230918,
                 name: Optional[str] = None) -> Interactions:
    """Every rating as an implicit interaction, split per user at random.

    Ids are remapped to 0-based indices in ascending original-id order; each
    user's distinct items are shuffled with numpy `default_rng(seed)` (users in
    ascending order) and round(test_fraction * n) of them go to test.
    """
    raw_u, raw_i = read_ratings(path)
    user_ids, u = np.unique(raw_u, return_inverse=True)
    item_ids, i = np.unique(raw_i, return_inverse=True)
    pairs = np.unique(np.stack([u, i], 1), axis=0)  # sorted by user, then item; duplicates dropped
    rng = np.random.default_rng(seed)
    starts = np.searchsorted(pairs[:, 0], np.arange(user_ids.size + 1))
    is_test = np.zeros(len(pairs), bool)
    for user in range(user_ids.size):
        lo, hi = starts[user], starts[user + 1]
        n_test = int(round(test_fraction * (hi - lo)))
        if n_test:
            is_test[lo + rng.permutation(hi - lo)[:n_test]] = True
    tr, te = pairs[~is_test], pairs[is_test]
    data = Interactions(name or Path(path).parent.name, int(user_ids.size), int(item_ids.size),
                        tr[:, 0].astype(np.int32), tr[:, 1].astype(np.int32),
                        te[:, 0].astype(np.int32), te[:, 1].astype(np.int32),
                        user_ids.astype(str), item_ids.astype(str))
    check_negatives_exist(data, Path(path))
    return without_cold_test(data, Path(path))


def without_cold_test(data: Interactions, path: Path) -> Interactions:
    """Leaves out the test interactions of users and items with no training
    interaction (they cannot be ranked from training data), with a warning
    that counts them; the counts go on the result (`cold_test_users`,
    `cold_test_items`). DataError if no test interaction is left."""
    has_user = data.user_degree() > 0
    has_item = data.item_degree() > 0
    cold_users = np.unique(data.test_users[~has_user[data.test_users]])
    cold_items = np.unique(data.test_items[~has_item[data.test_items]])
    if not cold_users.size and not cold_items.size:
        return data
    keep = has_user[data.test_users] & has_item[data.test_items]
    parts = []
    for kind, ids in (("user", cold_users), ("item", cold_items)):
        if ids.size:
            shown = ", ".join(str(int(i)) for i in ids[:5]) + (", ..." if ids.size > 5 else "")
            parts.append(f"{ids.size} test {kind}(s) with no training interaction (ids {shown})")
    if not keep.any():
        raise DataError(f"{path}: no test interaction left to evaluate: {'; '.join(parts)}")
    warnings.warn(f"{path}: {'; '.join(parts)}: their {int((~keep).sum())} test interaction(s) are left "
                  "out of Recall/NDCG", stacklevel=2)
    return dataclasses.replace(data, test_users=data.test_users[keep], test_items=data.test_items[keep],
                               cold_test_users=int(cold_users.size), cold_test_items=int(cold_items.size))


def check_negatives_exist(data: Interactions, path: Path) -> None:
    """Uniform negative sampling needs an item each user has not interacted with."""
    full = np.flatnonzero(data.user_degree() >= data.num_items)
    if full.size:
        raise DataError(f"{path}: user {int(full[0])} has interacted with all {data.num_items} items, "
                        "so no negative item can be sampled for them")


def split_validation(data: Interactions, fraction: float = 0.1, seed: int = 0) -> Interactions:
    """Holds out a seeded fraction of each user's training interactions.

    Returns an `Interactions` whose train is the rest (canonical order kept) and
    whose test is the held-out part; the original test set is not used at all.
    A user with one training interaction keeps it in train.
    """
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = np.argsort(data.train_users, kind="stable")
    counts = data.user_degree()
    starts = np.concatenate([[0], np.cumsum(counts)])
    held = np.zeros(data.num_train, bool)
    for user in np.flatnonzero(counts > 1):
        n = int(counts[user])
        k = min(n - 1, max(1, int(round(fraction * n))))
        rows = order[starts[user]:starts[user + 1]]
        held[rows[rng.permutation(n)[:k]]] = True
    return dataclasses.replace(
        data, name=f"{data.name}-validation",
        train_users=data.train_users[~held], train_items=data.train_items[~held],
        test_users=data.train_users[held], test_items=data.train_items[held])


# ---------------------------------------------------------------------------
# Registry, data directory and download


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    checksum: Optional[Tuple[str, str]]  # (algorithm, hex digest); None: recorded on first download


def _lightgcn_files(name: str, sha256: Dict[str, str]) -> Tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f, LIGHTGCN_URL.format(name=name, file=f),
                            ("sha256", sha256[f]) if f in sha256 else None)
                 for f in ("train.txt", "test.txt"))


DATASETS: Dict[str, Tuple[RemoteFile, ...]] = {
    "gowalla": _lightgcn_files("gowalla", {
        "train.txt": "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
        "test.txt": "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
    }) + (
        RemoteFile("user_list.txt", LIGHTGCN_URL.format(name="gowalla", file="user_list.txt"),
                   ("sha256", "5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1")),
        RemoteFile("item_list.txt", LIGHTGCN_URL.format(name="gowalla", file="item_list.txt"),
                   ("sha256", "6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139")),
    ),
    # The public LightGCN copy's digests (byte-identical to ../shared/data/yelp2018).
    "yelp2018": _lightgcn_files("yelp2018", {
        "train.txt": "1e9568725a9e833d0ac3bae01c94cd95367f73b3bb6104fd26b5f65ea5054093",
        "test.txt": "9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
    }),
    # train.txt: its published md5; test.txt has none known (recorded on first download).
    "amazon-book": tuple(
        dataclasses.replace(r, checksum=("md5", "c916ecac04ca72300a016228258b41ed")) if r.name == "train.txt" else r
        for r in _lightgcn_files("amazon-book", {})),
    # GroupLens publishes the md5 of the archive beside it.
    "ml-1m": (RemoteFile("ml-1m.zip", ML1M_URL, ("md5", "c4d9eecfca2ab87c1945afe126590906")),),
}


def default_data_dir() -> Path:
    env = os.environ.get("TF_SHARPCF_DATA")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tf_sharpcf"


def resolve_data_dir(data_dir: Optional[str]) -> Path:
    return Path(data_dir) if data_dir else default_data_dir()


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(remote: RemoteFile, folder: Path, timeout: float = 60.0) -> Path:
    """Downloads into `folder` through a temporary file, checks the checksum, renames."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{remote.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        if remote.checksum:
            algorithm, expected = remote.checksum
            got = file_digest(Path(tmp), algorithm)
            if got != expected:
                raise DataError(f"{remote.url}: {algorithm} mismatch (expected {expected}, got {got})")
        else:  # trust on first use: record the digest, later downloads must match it
            record = folder / f"{remote.name}.sha256"
            got = file_digest(Path(tmp), "sha256")
            if record.exists() and record.read_text().strip() != got:
                raise DataError(f"{remote.url}: sha256 {got} differs from the one recorded in {record}")
            record.write_text(got + "\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _fetch(name: str, folder: Path) -> None:
    missing = [r for r in DATASETS[name] if not (folder / r.name).exists()]
    try:
        for remote in missing:
            download(remote, folder)
    except DataError:
        raise
    except Exception as e:  # network failures of any kind
        wanted = ", ".join(r.name for r in DATASETS[name])
        hint = ("train.txt and test.txt (LightGCN format) or ratings.dat" if name == "ml-1m"
                else "train.txt and test.txt (LightGCN format)")
        raise DataError(
            f"dataset '{name}' is not in {folder} and could not be downloaded ({type(e).__name__}: {e}). "
            f"Put {hint} into {folder}, or download {wanted} from "
            f"{', '.join(r.url for r in DATASETS[name])}; or pass --data-dir.") from None
    if name == "ml-1m" and (folder / "ml-1m.zip").exists() and not (folder / "ratings.dat").exists():
        with zipfile.ZipFile(folder / "ml-1m.zip") as z:
            with z.open("ml-1m/ratings.dat") as src, open(folder / "ratings.dat.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(folder / "ratings.dat.part", folder / "ratings.dat")


def load_folder(folder: Path, name: Optional[str] = None) -> Interactions:
    folder = Path(folder)
    if (folder / "train.txt").exists() or (folder / "test.txt").exists():
        return load_lightgcn(folder, name)
    if (folder / "ratings.dat").exists():
        return load_ratings(folder / "ratings.dat", name=name)
    raise DataError(f"{folder}: no train.txt/test.txt (LightGCN format) or ratings.dat (MovieLens)")


def load_dataset(dataset: str, data_dir: Optional[str] = None, allow_download: bool = True) -> Interactions:
    """Loads a registered dataset (downloading it if missing) or a folder path.

    Registered names: gowalla, yelp2018, amazon-book, ml-1m. The folder for a
    name is `<data_dir>/<name>`; data_dir is `--data-dir`, else $TF_SHARPCF_DATA,
    else `~/.cache/tf_sharpcf`.
    """
    if dataset in DATASETS:
        folder = resolve_data_dir(data_dir) / dataset
        has_files = ((folder / "train.txt").exists() and (folder / "test.txt").exists()) or \
            (folder / "ratings.dat").exists()
        if not has_files:
            if not allow_download:
                raise DataError(f"dataset '{dataset}' not found in {folder} (downloads disabled)")
            _fetch(dataset, folder)
        return load_folder(folder, dataset)
    path = Path(dataset)
    if path.is_dir():
        return load_folder(path)
    raise DataError(f"unknown dataset {dataset!r}: not one of {', '.join(sorted(DATASETS))} "
                    "and not an existing folder")


def dataset_names() -> Sequence[str]:
    return tuple(sorted(DATASETS))
