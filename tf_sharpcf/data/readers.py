"""Readers: LightGCN `train.txt`/`test.txt` and MovieLens `ratings.dat` to `Interactions`.

Malformed input is a `DataError` naming the file, line and problem; a quirk of
real public data (a test item with no training row) is a warning.
"""
from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from tf_sharpcf.errors import DataError
from tf_sharpcf.data.interactions import Interactions, MAX_ID, _MAX_ID_DIGITS, check_negatives_exist, without_cold_test


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
