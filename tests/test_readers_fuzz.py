"""Seeded fuzzing of the readers: any input loads correctly or raises DataError.

Each case is a pair of LightGCN files (train.txt, test.txt) or a MovieLens
ratings.dat, built by `random.Random(seed)` from a small valid dataset and then
damaged (bad tokens, stray bytes, truncation, odd line endings, ...). A
reference reader written here, independently of `tf_sharpcf.data.readers`, says
what each case must give: the exact tables, or the file (and line) a DataError
must name. The readers are held to it, within a time limit per case.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)

import numpy as np
import pytest

from tf_sharpcf.data import readers
from tf_sharpcf.data import interactions
from tf_sharpcf.errors import DataError

MAX_ID = 2**31 - 2  # the readers' documented limit (ids index int32 embedding tables)
NUM_RANDOM_CASES = 240  # per reader, on top of the hand-written ones
CASE_SECONDS = 5.0
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Time limit


class CaseTimeout(BaseException):
    """Not an Exception, so no `except Exception` in the code under test eats it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------
# Reference reader: what a case must give


class Failure(NamedTuple):
    """The DataError a case must raise: the file it names and, if known, the line."""

    file: str
    lines: Tuple[int, ...] = ()  # any of these; () for problems of the whole file


def line_of(text_before: str) -> int:
    """Editors' line number (\\n, \\r\\n and \\r end a line) of the next character."""
    return text_before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1


def reference_lines(raw: bytes, name: str):
    """-> [lines] of a UTF-8 file, or the Failure for undecodable bytes or a NUL."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Failure(name, (line_of(raw[:e.start].decode("utf-8")),))
    if "\x00" in text:
        return Failure(name, (line_of(text[:text.index("\x00")]),))
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def reference_id(token: str) -> Optional[int]:
    """An ASCII-digit id <= MAX_ID, else None (int() is kept off 4300+ digit strings)."""
    if re.fullmatch(r"[0-9]+", token) is None:
        return None
    digits = token.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 and int(digits) <= MAX_ID else None


def reference_lightgcn_file(raw: bytes, name: str):
    """-> Failure, or (pairs in file order without repeats, {user: first line})."""
    lines = reference_lines(raw, name)
    if isinstance(lines, Failure):
        return lines
    pairs: List[Tuple[int, int]] = []
    first_line: Dict[int, int] = {}
    for lineno, line in enumerate(lines, start=1):
        ids = [reference_id(t) for t in re.split(r"[ \t]+", line) if t]
        if not ids:
            continue
        if None in ids:
            return Failure(name, (lineno,))
        first_line.setdefault(ids[0], lineno)
        for item in ids[1:]:
            if (ids[0], item) not in pairs:
                pairs.append((ids[0], item))
    if not first_line:
        return Failure(name)
    return pairs, first_line


def reference_lightgcn(train: bytes, test: bytes):
    """-> Failure, or (train pairs, test pairs, num_users, num_items)."""
    tr = reference_lightgcn_file(train, "train.txt")
    if isinstance(tr, Failure):
        return tr
    te = reference_lightgcn_file(test, "test.txt")
    if isinstance(te, Failure):
        return te
    (tr_pairs, tr_lines), (te_pairs, te_lines) = tr, te
    if not tr_pairs:
        return Failure("train.txt")
    if not te_pairs:
        return Failure("test.txt")
    num_users = max(max(tr_lines), max(te_lines)) + 1
    num_items = max(i for _, i in tr_pairs + te_pairs) + 1
    # Ids index table rows: a table over 10M rows and 10x the distinct ids is refused (sparse ids).
    for rows, distinct, kind in ((num_users, {u for u, _ in tr_pairs + te_pairs}, "user"),
                                 (num_items, {i for _, i in tr_pairs + te_pairs}, "item")):
        if rows > 10_000_000 and rows > 10 * len(distinct):
            if kind == "user":
                where = ("train.txt", tr_lines) if rows - 1 in tr_lines else ("test.txt", te_lines)
                return Failure(where[0], (where[1][rows - 1],))
            hit = [u for u, i in tr_pairs if i == rows - 1]
            return Failure("train.txt", (tr_lines[hit[0]],)) if hit else \
                Failure("test.txt", (te_lines[[u for u, i in te_pairs if i == rows - 1][0]],))
    if max(Counter(u for u, _ in tr_pairs).values()) >= num_items:
        return Failure("train.txt")  # a user has every item: no negative to sample
    # Test pairs of a user or item with no training pair cannot be ranked: left out.
    warm_users, warm_items = {u for u, _ in tr_pairs}, {i for _, i in tr_pairs}
    te_pairs = [(u, i) for u, i in te_pairs if u in warm_users and i in warm_items]
    if not te_pairs:
        return Failure("test.txt")
    return tr_pairs, te_pairs, num_users, num_items


def reference_ratings_file(raw: bytes, name: str = "ratings.dat"):
    """-> Failure, or [(user, movie)] original ids in file order."""
    lines = reference_lines(raw, name)
    if isinstance(lines, Failure):
        return lines
    pairs = []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip(" \t")
        if not line:
            continue
        parts = line.split("::")
        if (len(parts) != 4 or reference_id(parts[0]) is None or reference_id(parts[1]) is None
                or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", parts[2])
                or not re.fullmatch(r"-?[0-9]+", parts[3])):
            return Failure(name, (lineno,))
        pairs.append((reference_id(parts[0]), reference_id(parts[1])))
    return pairs if pairs else Failure(name)


def reference_ratings(raw: bytes):
    """-> Failure, or the set of distinct (user, movie) original-id pairs."""
    pairs = reference_ratings_file(raw)
    if isinstance(pairs, Failure):
        return pairs
    distinct = set(pairs)
    num_items = len({i for _, i in distinct})
    per_user = Counter(u for u, _ in distinct)
    # round(0.2 n) of a user's n items go to test; n - round(0.2 n) >= num_items
    # (every item in train) happens only for n = num_items <= 2.
    if any(n - round(0.2 * n) >= num_items for n in per_user.values()):
        return Failure("ratings.dat")
    return distinct


# ---------------------------------------------------------------------------
# Case generation

# Tokens that are not ids, or ids at the edge of what the readers take.
ODD_TOKENS = [
    str(2**31), str(2**31 - 1), str(2**32 + 5), str(2**63), "9" * 30, "1" * 5000,  # too large
    "-3", "-0", "+5", "1_000", "1.0", "1e3", "0x1f", "x", "nan", "", "1,2",  # not integers
    "٣", "²", "١٢", "１", "⅕", "𝟕",  # unicode digits
    "007", "00", "0" * 40 + "12",  # leading zeros: valid ids
]
# Spliced into the bytes of a file.
STRAY_BYTES = [
    b"\x00", b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80",  # NUL, invalid UTF-8
    b"\x1f", b"\x1c", b"\x0b", b"\x0c", b"\x7f", b"\xc2\x85", "\u2028".encode(), "\xa0".encode(),
    "\u3000".encode(), "\ufeff".encode(),  # separators str.split or splitlines would honour
    b"\r", b"\n", b"\r\n", b"\t", b" ", b"#", b"-", b":", b"x", "٣".encode(),
]


class Case(NamedTuple):
    name: str
    files: Dict[str, bytes]


def render(lines: List[List[str]], rng: random.Random) -> bytes:
    """Joins tokens with random spaces/tabs and lines with random line endings."""
    ending = rng.choice(["\n", "\r\n", "\r", "mixed"])
    out = []
    for tokens in lines:
        sep = rng.choice([" ", " ", "\t", "  ", " \t"])
        text = sep.join(tokens)
        if rng.random() < 0.1:
            text = rng.choice([" ", "\t"]) + text + rng.choice(["", " ", "\t "])
        out.append(text + (rng.choice(["\n", "\r\n", "\r"]) if ending == "mixed" else ending))
        if rng.random() < 0.08:
            out.append(rng.choice(["", " ", "\t", "  \t"]) + "\n")  # blank line
    text = "".join(out)
    if rng.random() < 0.15:
        text = text.rstrip("\r\n")  # no line break after the last line
    if rng.random() < 0.05:
        text = "\ufeff" + text  # byte-order mark
    return text.encode("utf-8")


def damage(raw: bytes, rng: random.Random, log: List[str]) -> bytes:
    """One random byte-level injury."""
    kind = rng.choices(["truncate", "stray", "flip", "duplicate line", "empty", "blank"],
                       weights=[6, 10, 4, 6, 1, 1])[0]
    log.append(kind)
    at = rng.randrange(len(raw) + 1)
    if kind == "truncate":
        return raw[:at]
    if kind == "stray":
        return raw[:at] + rng.choice(STRAY_BYTES) + raw[at:]
    if kind == "flip" and raw:
        at = min(at, len(raw) - 1)
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1:]
    if kind == "duplicate line":
        lines = raw.split(b"\n")
        k = rng.randrange(len(lines))
        return b"\n".join(lines[:k + 1] + lines[k:])
    if kind == "empty":
        return b""
    if kind == "blank":
        return rng.choice([b"", b"\n", b"\n\n", b" \t\r\n"]) * rng.randrange(1, 3)
    return raw


def replace_token(lines: List[List[str]], rng: random.Random, log: List[str]) -> None:
    row = rng.choice(lines)  # every line starts with its user
    k = rng.randrange(len(row))
    # Ids in range but huge only as items: a user id near MAX_ID makes the
    # loader count degrees over 2**31 users (seconds and gigabytes).
    odd = rng.choice(ODD_TOKENS + ([str(MAX_ID)] if k else []))
    log.append(f"token {row[k]!r} -> {odd[:20]!r}")
    row[k] = odd


def random_lightgcn_case(seed: int) -> Case:
    rng = random.Random(seed)
    log: List[str] = []
    num_users, num_items = rng.randint(1, 6), rng.randint(3, 9)
    train = [[u] + rng.choices(range(num_items), k=rng.choice([0, 1, 2, 3, 5])) for u in range(num_users)]
    rng.shuffle(train)
    # Test items mostly among trained ones (a test pair of an untrained item is
    # left out, and a test set with none left is an error).
    trained = sorted({i for row in train for i in row[1:]}) or [0]
    test = [[u] + rng.choices(trained if rng.random() < 0.85 else range(num_items), k=rng.randint(0, 3))
            for u in range(num_users) if rng.random() < 0.7] or [[0, 0]]
    warm = [row for row in train if len(row) > 1]
    if warm and rng.random() < 0.8:                  # most cases keep one rankable test pair
        test.append([warm[0][0], warm[0][1]])
    if rng.random() < 0.1:
        test.append([num_users + rng.randint(0, 3), 0])
        log.append("unknown test user")
    if rng.random() < 0.1:
        largest = max(i for row in train + test for i in row[1:] + [0])
        train[0] = [train[0][0]] + list(range(largest + 1))
        log.append("user with every item")
    files = {"train.txt": [[str(t) for t in row] for row in train],
             "test.txt": [[str(t) for t in row] for row in test]}
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        replace_token(files[rng.choice(list(files))], rng, log)
    raw = {name: render(lines, rng) for name, lines in files.items()}
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        name = rng.choice(list(raw))
        raw[name] = damage(raw[name], rng, log)
    return Case(f"seed {seed}: " + ", ".join(log or ["valid"]), raw)


def random_ratings_case(seed: int) -> Case:
    rng = random.Random(seed)
    log: List[str] = []
    users = rng.sample(range(1, 60), rng.randint(2, 6))
    items = rng.sample([1, 2, 3, 10, 99, 1000, 2**31 - 2], rng.choice([2, 3, 4, 5, 6, 7, 7]))
    rows = []
    for u in users:
        for i in rng.choices(items, k=rng.randint(2, 8)):  # repeats: duplicate interactions
            rows.append([str(u), str(i), rng.choice(["1", "3", "5", "4.5"]), str(rng.randint(9 * 10**8, 10**9))])
    rng.shuffle(rows)
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        row = rng.choice(rows)
        kind = rng.choice(["field", "field", "drop field", "extra field", "separator"])
        k = rng.randrange(len(row))
        if kind == "field":
            row[k] = rng.choice(ODD_TOKENS + ["4.5", "-1", "3.", ".5", "1e9"])
        elif kind == "drop field":
            del row[k]
        elif kind == "extra field":
            row.insert(k, "7")
        else:
            row[k] = row[k] + rng.choice([":", ": ", "::", " "])
        log.append(f"{kind} {k} -> {row!r:.40}")
    text = render([["::".join(row)] for row in rows], rng)
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        text = damage(text, rng, log)
    return Case(f"seed {seed}: " + ", ".join(log or ["valid"]), {"ratings.dat": text})


def lightgcn(train: str, test: str) -> Dict[str, bytes]:
    return {"train.txt": train.encode("utf-8"), "test.txt": test.encode("utf-8")}


VALID = "0 1 2\n1 0 3\n2 2\n"
# Hand-written cases: (name, files, whether they must load).
LIGHTGCN_CASES = [
    ("crlf line endings", lightgcn(VALID.replace("\n", "\r\n"), "0 3\r\n1 1\r\n"), True),
    ("cr line endings", lightgcn(VALID.replace("\n", "\r"), "0 3\r1 1\r"), True),
    ("tabs", lightgcn("0\t1\t2\n1 \t0\t3\t\n", "0\t3\n"), True),
    ("blank lines", lightgcn("\n\n0 1 2\n \n\t\n1 3\n\n", "\n0 3\n\n"), True),
    ("empty user", lightgcn("0 1 2\n1\n2 0\n", "1 2\n2 1\n"), True),
    ("only a user with no training item in test", lightgcn("0 1 2\n1\n2 0\n", "1 2\n"), False),
    ("test item never trained", lightgcn(VALID, "0 3\n1 7\n"), True),
    ("duplicate interactions", lightgcn("0 1 1 2\n1 3\n0 2 1\n", "0 3\n0 3\n"), True),
    ("no final line break", lightgcn("0 1 2\n1 3", "0 3"), True),
    ("byte-order mark", lightgcn("\ufeff" + VALID, "\ufeff0 3\n"), True),
    ("leading zeros", lightgcn("00 01 002\n1 0003\n", "0 3\n"), True),
    ("largest item id", lightgcn(f"0 1 {MAX_ID}\n1 2\n", "1 1\n"), False),      # sparse ids: a 2**31-row table
    ("large dense enough ids", lightgcn("0 1 2\n1 2 9\n", "1 1\n"), True),
    ("truncated line", lightgcn("0 1 2\n1 3 4\n2 1", "0 3\n1"), True),
    ("truncated utf-8 sequence", {"train.txt": b"0 1 2\n1 \xd9", "test.txt": b"0 3\n"}, False),
    ("stray byte", {"train.txt": b"0 1 2\n1 3\x1f4\n", "test.txt": b"0 3\n"}, False),
    ("form feed", {"train.txt": b"0 1\x0c2\n1 x\n", "test.txt": b"0 3\n"}, False),
    ("line separator", lightgcn("0 1\u20282\n1 3\n", "0 3\n"), False),
    ("no-break space", lightgcn("0 1\xa02\n1 3\n", "0 3\n"), False),
    ("id over 2**31", lightgcn(f"0 1\n1 {2**31 + 7}\n", "0 3\n"), False),
    ("id of 5000 digits", lightgcn("0 1\n1 " + "7" * 5000 + "\n", "0 3\n"), False),
    ("negative id", lightgcn("0 1\n-1 2\n", "0 3\n"), False),
    ("non-integer token", lightgcn("0 1\n1 2.0\n", "0 3\n"), False),
    ("non-utf-8 bytes", {"train.txt": b"0 1\n1 2\n\xe9t\xe9 3\n", "test.txt": b"0 3\n"}, False),
    ("nul byte", {"train.txt": b"0 1\n1 2\r\n2 3\x00\n", "test.txt": b"0 3\n"}, False),
    ("empty train file", lightgcn("", "0 3\n"), False),
    ("empty test file", lightgcn(VALID, ""), False),
    ("only blank lines", lightgcn("\n \n\t\n", "0 3\n"), False),
    ("users without items only", lightgcn("0\n1\n", "0 3\n"), False),
    ("arabic-indic digit", lightgcn("0 1\n1 ٣\n", "0 3\n"), False),
    ("superscript two", lightgcn("0 ²\n1 3\n", "0 3\n"), False),
    ("plus sign", lightgcn("0 1\n+5 2\n", "0 3\n"), False),
    ("underscore in number", lightgcn("0 1\n1 1_000\n", "0 3\n"), False),
    ("test user unknown to train", lightgcn(VALID, "0 3\n7 1\n"), True),
    ("test lines with user ids only", lightgcn(VALID, "0\n1\n"), False),
    ("user with every item", lightgcn("0 0 1 2 3\n1 3\n", "1 2\n"), False),
]
RATINGS_CASES = [
    ("valid", {"ratings.dat": b"1::10::5::978300760\n1::20::3::978302109\n2::30::4::1\n"}, True),
    ("crlf and blank lines", {"ratings.dat": b"\r\n1::10::5::9\r\n\r\n2::20::3::9\r\n1::30::4::9"}, True),
    ("duplicate ratings", {"ratings.dat": b"1::10::5::9\n1::10::4::10\n2::20::3::9\n2::30::1::9\n"}, True),
    ("half-star rating", {"ratings.dat": b"1::10::4.5::9\n2::20::3::9\n"}, True),
    ("huge original ids", {"ratings.dat": f"{MAX_ID}::{MAX_ID}::5::9\n1::2::5::9\n".encode()}, True),
    ("id over 2**31", {"ratings.dat": f"1::10::5::9\n{2**31}::10::5::9\n".encode()}, False),
    ("negative id", {"ratings.dat": b"1::10::5::9\n1::-10::5::9\n"}, False),
    ("unicode digit rating", {"ratings.dat": "1::10::5::9\n1::20::٣::9\n".encode()}, False),
    ("superscript timestamp", {"ratings.dat": "1::10::5::9\n1::20::3::9²\n".encode()}, False),
    ("plus and underscore", {"ratings.dat": b"1::10::5::9\n+1::20::3::1_000\n"}, False),
    ("nan rating", {"ratings.dat": b"1::10::nan::9\n"}, False),
    ("truncated line", {"ratings.dat": b"1::10::5::9\n1::20::"}, False),
    ("tabs instead of ::", {"ratings.dat": b"1\t10\t5\t9\n"}, False),
    ("stray byte", {"ratings.dat": b"1::10::5::9\x1f\n"}, False),
    ("non-utf-8", {"ratings.dat": b"1::10::5::9\n\xff::1::1::1\n"}, False),
    ("nul byte", {"ratings.dat": b"1::10::5::9\n2::10::\x005::9\n"}, False),
    ("empty file", {"ratings.dat": b""}, False),
    ("user with every item", {"ratings.dat": b"1::10::5::9\n1::20::5::9\n2::10::4::9\n"}, False),
]


# ---------------------------------------------------------------------------
# Checks


def write(folder: Path, files: Dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def call(fn, *args):
    """-> (result, None) or (None, DataError); any other exception fails the case."""
    try:
        with time_limit(CASE_SECONDS):
            return fn(*args), None
    except DataError as e:
        return None, e


def check_error(case: Case, folder: Path, error: Optional[DataError], expected: Failure) -> None:
    assert error is not None, f"{case.name}: loaded, but must fail naming {expected}"
    message = str(error)
    path = str(folder / expected.file)
    assert path in message, f"{case.name}: {message!r} does not name {path}"
    if expected.lines:
        assert any(f"{path}:{n}:" in message for n in expected.lines), \
            f"{case.name}: {message!r} does not name line {' or '.join(map(str, expected.lines))}"


def check_lightgcn(case: Case, folder: Path) -> bool:
    """Checks read_lightgcn_file and load_lightgcn on one case; -> whether it loaded."""
    expected_file = reference_lightgcn_file(case.files["train.txt"], "train.txt")
    got, error = call(readers.read_lightgcn_file, folder / "train.txt")
    if isinstance(expected_file, Failure):
        check_error(case, folder, error, expected_file)
    else:
        assert error is None, f"{case.name}: read_lightgcn_file raised {error}"
        users, items, first_line = got
        assert list(zip(users.tolist(), items.tolist())) == expected_file[0], case.name
        assert first_line == expected_file[1], case.name

    expected = reference_lightgcn(case.files["train.txt"], case.files["test.txt"])
    data, error = call(readers.load_lightgcn, folder)
    if isinstance(expected, Failure):
        check_error(case, folder, error, expected)
        return False
    assert error is None, f"{case.name}: load_lightgcn raised {error}"
    tr_pairs, te_pairs, num_users, num_items = expected
    check_invariants(case, data)
    assert (data.num_users, data.num_items) == (num_users, num_items), case.name
    assert list(zip(data.train_users.tolist(), data.train_items.tolist())) == tr_pairs, case.name
    assert list(zip(data.test_users.tolist(), data.test_items.tolist())) == te_pairs, case.name
    return True


def check_ratings(case: Case, folder: Path) -> bool:
    """Checks read_ratings and load_ratings on one case; -> whether it loaded."""
    path = folder / "ratings.dat"
    expected_file = reference_ratings_file(case.files["ratings.dat"])
    got, error = call(readers.read_ratings, path)
    if isinstance(expected_file, Failure):
        check_error(case, folder, error, expected_file)
    else:
        assert error is None, f"{case.name}: read_ratings raised {error}"
        assert list(zip(got[0].tolist(), got[1].tolist())) == expected_file, case.name

    expected = reference_ratings(case.files["ratings.dat"])
    data, error = call(readers.load_ratings, path)
    if isinstance(expected, Failure):
        check_error(case, folder, error, expected)
        return False
    if error is not None and "no test interaction left to evaluate" in str(error):
        # The random split put only never-trained items into test (tiny files).
        assert str(path) in str(error), case.name
        return False
    assert error is None, f"{case.name}: load_ratings raised {error}"
    check_invariants(case, data)
    assert data.user_ids.tolist() == sorted({str(u) for u, _ in expected}, key=int), case.name
    assert data.item_ids.tolist() == sorted({str(i) for _, i in expected}, key=int), case.name
    train = {(int(data.user_ids[u]), int(data.item_ids[i]))
             for u, i in zip(data.train_users, data.train_items)}
    test = {(int(data.user_ids[u]), int(data.item_ids[i])) for u, i in zip(data.test_users, data.test_items)}
    assert not train & test, f"{case.name}: split repeats pairs"
    # Left out of test: exactly the pairs whose item (or user) no training pair has.
    left_out = expected - train - test
    trained_items, trained_users = {i for _, i in train}, {u for u, _ in train}
    assert all(i not in trained_items or u not in trained_users for u, i in left_out), case.name
    assert data.cold_test_items == len({i for _, i in left_out if i not in trained_items}), case.name
    per_user = Counter(u for u, _ in expected)
    in_test = Counter(int(data.user_ids[u]) for u in data.test_users)
    dropped = Counter(u for u, _ in left_out)
    assert all(in_test[u] + dropped[u] == round(0.2 * n) for u, n in per_user.items()), case.name
    return True


def check_invariants(case: Case, data: interactions.Interactions) -> None:
    for a in (data.train_users, data.train_items, data.test_users, data.test_items):
        assert a.dtype == np.int32, case.name
    assert data.train_users.shape == data.train_items.shape and data.train_users.size > 0, case.name
    assert data.test_users.shape == data.test_items.shape, case.name
    for users, items in ((data.train_users, data.train_items), (data.test_users, data.test_items)):
        assert ((0 <= users) & (users < data.num_users)).all(), case.name
        assert ((0 <= items) & (items < data.num_items)).all(), case.name
    keys = data.train_users.astype(np.int64) * data.num_items + data.train_items
    assert np.unique(keys).size == keys.size, f"{case.name}: repeated (user, item) in train"
    assert (data.user_degree() < data.num_items).all(), f"{case.name}: a user has every item"


# ---------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("name,files,loads", LIGHTGCN_CASES, ids=[c[0] for c in LIGHTGCN_CASES])
def test_lightgcn_named_case(tmp_path, name, files, loads):
    case = Case(name, files)
    assert check_lightgcn(case, write(tmp_path / "data", files)) == loads


@pytest.mark.parametrize("name,files,loads", RATINGS_CASES, ids=[c[0] for c in RATINGS_CASES])
def test_ratings_named_case(tmp_path, name, files, loads):
    case = Case(name, files)
    assert check_ratings(case, write(tmp_path / "data", files)) == loads


def test_lightgcn_random_cases(tmp_path):
    outcomes = Counter()
    for seed in range(NUM_RANDOM_CASES):
        case = random_lightgcn_case(seed)
        outcomes[check_lightgcn(case, write(tmp_path / str(seed), case.files))] += 1
    # The corpus exercises both outcomes in earnest.
    assert outcomes[True] >= NUM_RANDOM_CASES // 5 and outcomes[False] >= NUM_RANDOM_CASES // 5, outcomes


def test_ratings_random_cases(tmp_path):
    outcomes = Counter()
    for seed in range(NUM_RANDOM_CASES):
        case = random_ratings_case(seed)
        outcomes[check_ratings(case, write(tmp_path / str(seed), case.files))] += 1
    assert outcomes[True] >= NUM_RANDOM_CASES // 5 and outcomes[False] >= NUM_RANDOM_CASES // 5, outcomes


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_rather_than_read(tmp_path):
    folder = write(tmp_path / "data", {"test.txt": b"0 1\n"})
    os.mkfifo(folder / "train.txt")
    _, error = call(readers.load_lightgcn, folder)
    assert f"{folder / 'train.txt'}: not a regular file" in str(error)


# (files, the file and line the error must name)
BAD_FOLDERS = [
    (lightgcn("0 1 2\n1 x 3\n", "0 3\n"), "train.txt:2:"),
    ({"train.txt": b"0 1 2\n1 3\n", "test.txt": b"0 3\r\n\r\n1 \x004\n"}, "test.txt:3:"),
    ({"ratings.dat": b"1::10::5::978300760\n2::\xe9::3::978300760\n"}, "ratings.dat:2:"),
]


def test_fit_reports_bad_data_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    runs = []
    for k, (files, where) in enumerate(BAD_FOLDERS):
        folder = write(tmp_path / f"data{k}", files)
        out = tmp_path / f"out{k}"
        # The three runs share the time it takes to import TensorFlow.
        proc = subprocess.Popen(
            [sys.executable, "-m", "tf_sharpcf.fit", "--dataset", str(folder), "--epochs", "1",
             "--output-dir", str(out), "--quiet"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs.append((proc, folder, where, out))
    for proc, folder, where, out in runs:
        try:
            _, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stderr, stderr
        assert len(errors) == 1 and errors[0] == stderr.strip().splitlines()[-1], stderr
        assert f"{folder}/{where}" in errors[0], errors[0]
        assert not out.exists()
