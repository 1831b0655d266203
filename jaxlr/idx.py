"""IDX files (the MNIST / Fashion-MNIST format): a validating reader and a verified download.

:func:`read_idx` reads one file (gzipped or not) and checks its magic number, dtype, shape and
size; :func:`fetch_idx_files` downloads the missing files of a dataset from its mirror
(:data:`IDX_SOURCES`), each streamed to a temporary file, checked against its sha256 and moved
into place atomically. Where the files are looked for is :mod:`jaxlr.data`'s business.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

import numpy as np

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DATA_DIR_ENV = "JAXLR_DATA_DIR"


class DataError(ValueError):
    """A data problem the user can fix; the message says what was wrong and how to fix it."""


@dataclasses.dataclass(frozen=True)
class IdxSource:
    """Where the four IDX files of one dataset are downloaded from, and their sha256 digests."""

    url: str  # base URL; file URLs are url + file name
    mirror_env: str  # environment variable that overrides ``url``
    sha256: Mapping[str, str]  # file name -> expected hex digest


# Digests from tensorflow_datasets/url_checksums/{fashion_mnist,mnist}.tsv (the original files;
# the MNIST digests are those of the files every MNIST mirror serves).
IDX_SOURCES: Mapping[str, IdxSource] = {
    "fashion_mnist": IdxSource(
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        mirror_env="JAXLR_FASHION_MNIST_MIRROR",
        sha256={
            "train-images-idx3-ubyte.gz": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte.gz": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
    ),
    "mnist": IdxSource(
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        mirror_env="JAXLR_MNIST_MIRROR",
        sha256={
            "train-images-idx3-ubyte.gz": (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
            ),
            "train-labels-idx1-ubyte.gz": (
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
            ),
            "t10k-images-idx3-ubyte.gz": (
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
            ),
            "t10k-labels-idx1-ubyte.gz": (
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
            ),
        },
    ),
}


# IDX type codes (third magic byte) -> big-endian numpy dtype.
IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads one IDX file (gzipped or plain) into a native-endian numpy array.

    Format: magic ``00 00 <type code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
    big-endian payload of ``prod(sizes)`` items (type codes in :data:`IDX_DTYPES`).

    Raises:
      DataError: naming the file, when it is missing, not gzip-readable, has a wrong magic number
        or type code, or its payload length does not match its header.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read it ({e}); delete it and fetch it again") from e
    bad = f"{path}: not a valid IDX file"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{bad} (wrong magic number {raw[:4].hex()}); delete it and fetch it again")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{bad} (unknown type code 0x{code:02x}); delete it and fetch it again")
    if ndim == 0:
        raise DataError(f"{bad} (zero dimensions); delete it and fetch it again")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{bad} (truncated header); delete it and fetch it again")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{bad} (payload is {len(raw) - header} bytes, header {shape} needs {expected}: "
            "truncated or corrupt); delete it and fetch it again"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _idx_path(directory: pathlib.Path, file: str) -> pathlib.Path | None:
    """``directory/file`` if present, else its un-gzipped twin, else None."""
    for candidate in (directory / file, directory / file.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_images_labels(images_file: pathlib.Path, labels_file: pathlib.Path):
    """One split: ``(n, rows*cols)`` uint8 images and ``(n,)`` int32 labels, cross-checked."""
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_file}: expected uint8 images of shape (n, rows, cols), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_file}: expected uint8 labels (n,), got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_file} has {images.shape[0]} images but {labels_file} has "
            f"{labels.shape[0]} labels; the files do not belong together"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_file}: labels must be 0..9, found {int(labels.max())}")
    return images.reshape(images.shape[0], -1), labels.astype(np.int32)


def _read_idx_dataset(directory: pathlib.Path):
    """Train and test arrays from the four IDX files in ``directory``."""
    paths = [_idx_path(directory, f) or directory / f for f in IDX_FILES]
    x_train, y_train = _read_images_labels(paths[0], paths[1])
    x_test, y_test = _read_images_labels(paths[2], paths[3])
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(f"{paths[0]} and {paths[2]} have different image sizes")
    return x_train, y_train, x_test, y_test


def mirror_url(name: str) -> str:
    """The base URL of ``name``'s IDX files: ``$JAXLR_<NAME>_MIRROR`` or the public mirror."""
    source = IDX_SOURCES[name]
    url = os.environ.get(source.mirror_env) or source.url
    return url if url.endswith("/") else url + "/"


def _where_to_put(missing: Sequence[str], target: pathlib.Path, url: str) -> str:
    """The fix for missing IDX files: where to put them and where to get them."""
    return (
        f"put {', '.join(missing)} in {target} (or point data_dir / ${DATA_DIR_ENV} at a "
        "directory that has them); "
        f"get them from {url}"
    )


def fetch_idx_files(
    name: str,
    directory: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> pathlib.Path:
    """Downloads the IDX files of ``name`` missing from ``directory``; returns ``directory``.

    Each file is streamed to a temporary file in ``directory``, its sha256 checked against
    ``sha256[file]`` (default :data:`IDX_SOURCES`), then moved into place with ``os.replace``,
    so a failed or corrupt download never leaves a file under the final name. Files already
    present are not fetched again (nor re-verified).

    Args:
      name: ``"fashion_mnist"`` or ``"mnist"``.
      directory: target directory (created if needed).
      base_url: mirror base URL (default :func:`mirror_url`: env override or the public mirror).
      sha256: file name -> expected hex digest (default the table in :data:`IDX_SOURCES`).
      timeout: socket timeout in seconds for each request.

    Raises:
      DataError: unreachable mirror (saying where to put the files and where to get them), HTTP
        error, or sha256 mismatch (the bad download is deleted).
    """
    if name not in IDX_SOURCES:
        raise DataError(f"no IDX mirror for {name!r}; choose one of: {', '.join(IDX_SOURCES)}")
    directory = pathlib.Path(directory)
    url = base_url or mirror_url(name)
    url = url if url.endswith("/") else url + "/"
    digests = IDX_SOURCES[name].sha256 if sha256 is None else sha256
    missing = [f for f in IDX_FILES if _idx_path(directory, f) is None]
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{name}: cannot create {directory} ({e}); pass a writable data_dir") from e
    try:
        for i, file in enumerate(missing):
            _download_verified(
                name, url + file, directory / file, digests[file], missing[i:], timeout
            )
    except DataError:
        for d in created:  # a failed download leaves no empty directories behind
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return directory


def _download_verified(
    name: str, url: str, dest: pathlib.Path, digest: str, missing: Sequence[str], timeout: float
) -> None:
    """Streams ``url`` into ``dest`` atomically if its sha256 is ``digest``."""
    request = urllib.request.Request(url, headers={"User-Agent": "jaxlr"})
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        hasher = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as r:
                while chunk := r.read(1 << 20):
                    hasher.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {e.reason}"
            else:
                reason = str(getattr(e, "reason", e))
            raise DataError(
                f"{name}: could not download {url} ({reason}); "
                + _where_to_put(missing, dest.parent, url.rsplit("/", 1)[0] + "/")
            ) from e
        got = hasher.hexdigest()
        if got != digest.lower():
            raise DataError(
                f"{url}: sha256 mismatch (got {got}, expected {digest}); the download was "
                f"discarded: retry, or set ${IDX_SOURCES[name].mirror_env} to another mirror"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
