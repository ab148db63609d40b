"""The dataset registry: names, public URLs with checksums, the data directory, download.

`load_dataset(name or folder)` reads a folder that has the files, else
downloads them (checksummed, through a temporary file and one rename) into
the data directory: --data-dir, else $TF_SHARPCF_DATA, else the cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple


from tf_sharpcf.errors import DataError
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.readers import load_lightgcn, load_ratings


LIGHTGCN_URL = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/{name}/{file}"
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


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


def fetch(name: str, folder: Path) -> None:
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
            fetch(dataset, folder)
        return load_folder(folder, dataset)
    path = Path(dataset)
    if path.is_dir():
        return load_folder(path)
    raise DataError(f"unknown dataset {dataset!r}: not one of {', '.join(sorted(DATASETS))} "
                    "and not an existing folder")


def dataset_names() -> Sequence[str]:
    return tuple(sorted(DATASETS))
