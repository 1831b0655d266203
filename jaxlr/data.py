"""Datasets as arrays: ``digits`` (embedded), ``fashion_mnist``, ``mnist`` and ``synthetic``.

Every dataset comes back as a :class:`Dataset` of four host numpy arrays (``x`` of shape
``(n, in_features)``, ``y`` of shape ``(n,)`` and dtype ``int32``), the scalar normalization
constants and its ``origin`` (where it was read from). There is one way onto the device:
:func:`device_data` puts the arrays there in their raw dtype (test set padded into evaluation
chunks), and the jitted training step calls :func:`normalize` on each raw batch.

Datasets (``load_dataset(name)``):

* ``"digits"`` -- the embedded default: scikit-learn's bundled 8x8 handwritten digits
  (``sklearn.datasets.load_digits``: 1,797 images, 10 classes, 64 features, pixel values 0..16
  stored as ``uint8``). A deterministic stratified split (``train_test_split(test_size=0.2,
  stratify=y, random_state=0)``, recorded in ``digits_split.npy``) gives **1,437 train / 360
  test** images. Never touches the network.
* ``"fashion_mnist"``, ``"mnist"`` -- 60,000 train / 10,000 test images of 28x28 (784 features,
  raw ``uint8`` pixels 0..255, 10 classes), read from the four standard IDX files
  (:data:`IDX_FILES`, gzipped or not) with a validating numpy reader (:func:`read_idx`), or, with
  ``source="tfds"``, from a TFDS dataset prepared in ``array_record`` format (no TensorFlow needed).
* ``"synthetic"`` -- Gaussian inputs ``x ~ N(0, 1)`` (``float32``) and uniformly random labels, as
  in the width examples. Default shape 60,000 train / 10,000 test, 784 features, 10 classes
  (the benchmark stand-in); ``n_train``, ``n_test``, ``features`` and ``num_classes`` override it
  (the width examples use ``n_train=100, features=10, num_classes=2``). Seeded by ``data_seed``
  (a numpy ``Generator``).

For the image datasets ``n_train`` / ``n_test`` keep the **first** ``n`` rows of each split (a
quick run on a subset); ``features`` / ``num_classes`` apply to ``synthetic`` only.

Normalization: inputs are standardized with one scalar mean/std computed on the training set,

    x = (raw - mean) / std,   mean = mean(x_train_raw),   std = std(x_train_raw)   (all pixels),

computed exactly in float64 on the (possibly subsampled) training split and applied to both splits.
``synthetic`` is already standardized: ``mean = 0``, ``std = 1``. The arrays keep their raw dtype
(``uint8`` for images: 4x less device memory than float32); :func:`normalize` converts.

Where the IDX files are looked for. With a ``data_dir`` argument (``--data-dir``), **only** there:
a directory you name that does not hold the files is an error, never a silent fallback. Without
it, in order (the first directory holding all four files wins):

1. ``$JAXLR_DATA_DIR``,
2. the cache directory ``$XDG_CACHE_HOME/jaxlr`` (default ``~/.cache/jaxlr``),
3. ``/usr/share/datasets`` (:data:`SYSTEM_DATA_DIRS`; Debian's ``dataset-fashion-mnist`` package
   installs ``/usr/share/datasets/fashion-mnist/``);

in each root ``<root>/<name>/<file>``, ``<root>/<name with - for _>/<file>`` and
``<root>/<file>`` are accepted (``<name>`` is ``fashion_mnist`` or ``mnist``). A ``data_dir``
that does not hold them is reported with the files expected; nothing is created or downloaded
there. Without ``data_dir``, when they are absent and ``download=True``, the missing files are
downloaded once into ``<cache>/<name>/``, from the dataset's public mirror
(:data:`IDX_SOURCES`; override it with ``$JAXLR_FASHION_MNIST_MIRROR`` / ``$JAXLR_MNIST_MIRROR``),
each verified against its sha256 and written atomically. Offline, :class:`DataError` says which
files are missing, where to put them and where to get them.

Example:

  >>> ds = load_dataset("digits")
  >>> (ds.n_train, ds.n_test, ds.in_features, ds.num_classes, ds.x_train.dtype)
  (1437, 360, 64, 10, dtype('uint8'))
  >>> x = ds.normalize(ds.x_train)
  >>> bool(abs(x.mean()) < 1e-5), bool(abs(x.std() - 1) < 1e-5)
  (True, True)
  >>> ds.origin
  'embedded: scikit-learn load_digits'
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import pathlib
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr.idx import (
    DATA_DIR_ENV,
    IDX_FILES,
    _idx_path,
    _read_idx_dataset,
    _where_to_put,
)
from jaxlr.idx import IDX_DTYPES as IDX_DTYPES  # re-exported: jaxlr.data's public names
from jaxlr.idx import IDX_SOURCES as IDX_SOURCES
from jaxlr.idx import DataError as DataError
from jaxlr.idx import IdxSource as IdxSource
from jaxlr.idx import fetch_idx_files as fetch_idx_files
from jaxlr.idx import mirror_url as mirror_url
from jaxlr.idx import read_idx as read_idx
from jaxlr.text import TextDataset as TextDataset  # re-exported
from jaxlr.text import load_text_dataset as load_text_dataset

DatasetName = Literal["digits", "fashion_mnist", "mnist", "synthetic"]
DataSource = Literal["idx", "tfds"]

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "synthetic")
SOURCES: tuple[str, ...] = ("idx", "tfds")

DIGITS_TEST_FRACTION = 0.2  # 1,797 digits -> 1,437 train / 360 test
# the row order of the stratified split (train_test_split with random_state=0)
DIGITS_SPLIT_FILE = pathlib.Path(__file__).with_name("digits_split.npy")
SYNTHETIC_SHAPE = {"n_train": 60_000, "n_test": 10_000, "features": 784, "num_classes": 10}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split as host arrays, in raw units, with its normalization constants.

    Equality is identity (arrays have no single truth value); compare fields explicitly. To train
    on it, :func:`device_data` puts it on the device.
    """

    name: str  # canonical dataset name, one of DATASETS
    x_train: Any  # (n_train, in_features); uint8 raw pixels (images) or float32 (synthetic)
    y_train: Any  # (n_train,) int32 labels in [0, num_classes)
    x_test: Any  # (n_test, in_features), same dtype as x_train
    y_test: Any  # (n_test,) int32
    num_classes: int  # number of classes
    mean: float  # normalization in raw units: x = (raw - mean) / std
    std: float  # > 0
    origin: str = ""  # where the arrays came from: a directory, "embedded: ...", "tfds: ..."

    def __post_init__(self) -> None:
        xs, ys = (self.x_train, self.x_test), (self.y_train, self.y_test)
        if any(x.ndim != 2 for x in xs) or any(y.ndim != 1 for y in ys):
            raise DataError(f"{self.name}: x must be 2-D (n, features) and y 1-D (n,)")
        if self.x_train.shape[1] != self.x_test.shape[1] or self.x_train.dtype != self.x_test.dtype:
            raise DataError(f"{self.name}: train and test inputs differ in features or dtype")
        for x, y, split in zip(xs, ys, ("train", "test"), strict=True):
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{self.name}: {x.shape[0]} {split} inputs but {y.shape[0]} labels")
            if y.dtype != np.int32:
                raise DataError(f"{self.name}: {split} labels must be int32, got {y.dtype}")
        if not self.std > 0:
            raise DataError(f"{self.name}: std must be > 0, got {self.std}")

    @property
    def in_features(self) -> int:
        """Number of input features (64 for digits, 784 for 28x28 images)."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def normalize(self, raw: Any, dtype: Any = jnp.float32) -> Any:
        """:func:`normalize` with this dataset's ``mean`` and ``std``."""
        return normalize(raw, self.mean, self.std, dtype)

    def __repr__(self) -> str:
        def arr(a: Any) -> str:
            return f"{tuple(a.shape)} {a.dtype}" if hasattr(a, "dtype") else repr(a)

        return (
            f"Dataset(name={self.name!r}, x_train={arr(self.x_train)}, x_test={arr(self.x_test)},"
            f" num_classes={self.num_classes}, mean={self.mean:.6g}, std={self.std:.6g})"
        )


def normalize(raw: Any, mean: float, std: float, dtype: Any = jnp.float32) -> Any:
    """``(raw - mean) / std`` in ``dtype``: numpy in, numpy out; jax (or traced) in, jax out.

    The one normalization of the library: the training step applies it to raw device batches
    inside ``jit`` (``mean`` and ``std`` are Python constants there).
    """
    xp = np if isinstance(raw, np.ndarray) else jnp
    x = xp.asarray(raw).astype(dtype)
    return (x - xp.asarray(mean, dtype)) / xp.asarray(std, dtype)


EVAL_CHUNK = 2000
"""Test examples evaluated at once (bounds activation memory); :func:`device_data`'s default."""


class DeviceData(NamedTuple):
    """A :class:`Dataset` on the device in raw dtype, as the training programs take it."""

    x_train: jax.Array  # (n_train, d) raw dtype
    y_train: jax.Array  # (n_train,) int32
    x_test: jax.Array  # (chunks, chunk, d), zero-padded
    y_test: jax.Array  # (chunks, chunk) int32
    test_mask: jax.Array  # (chunks, chunk) float32, 0 on padding


def device_data(dataset: Dataset, eval_chunk: int = EVAL_CHUNK, sharding: Any = None) -> DeviceData:
    """Puts ``dataset`` on the device (``sharding``: e.g. replicated over a mesh), raw dtypes
    kept, the test set padded into chunks of ``min(eval_chunk, n_test)`` with a 0/1 mask.
    A :class:`TextDataset` goes as its training bytes and its validation windows."""
    if isinstance(dataset, TextDataset):
        return _text_device_data(dataset, eval_chunk, sharding)
    x_test, y_test = np.asarray(dataset.x_test), np.asarray(dataset.y_test)
    n_test = len(y_test)
    chunk = min(eval_chunk, n_test)
    n_chunks = -(-n_test // chunk)
    pad = n_chunks * chunk - n_test
    mask = np.concatenate([np.ones(n_test, np.float32), np.zeros(pad, np.float32)])
    x_test = np.concatenate([x_test, np.zeros((pad, *x_test.shape[1:]), x_test.dtype)])
    y_test = np.concatenate([y_test, np.zeros(pad, y_test.dtype)])
    arrays = DeviceData(
        np.asarray(dataset.x_train),
        np.asarray(dataset.y_train, np.int32),
        x_test.reshape(n_chunks, chunk, -1),
        y_test.reshape(n_chunks, chunk).astype(np.int32),
        mask.reshape(n_chunks, chunk),
    )
    return jax.device_put(arrays, sharding)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    source: DataSource = "idx",
    download: bool = True,
    n_train: int | None = None,
    n_test: int | None = None,
    features: int | None = None,
    num_classes: int | None = None,
    data_seed: int = 0,
) -> Dataset:
    """Loads ``name`` (one of :data:`DATASETS`) as a host :class:`Dataset`; see the module doc.

    Args:
      name: ``"digits"``, ``"fashion_mnist"``, ``"mnist"`` or ``"synthetic"`` (``-`` is read as
        ``_``, case is ignored).
      data_dir: the only directory searched for IDX files when given (an error if they are not
        there; never downloaded into); for ``source="tfds"`` the TFDS data directory (default
        TFDS's own: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      source: ``"idx"`` (the IDX files) or ``"tfds"`` (a prepared ``array_record`` TFDS dataset);
        image datasets only.
      download: download missing IDX files from the public mirror (never used for TFDS).
      n_train, n_test: synthetic: split sizes; image datasets: keep the first ``n`` rows.
      features, num_classes: synthetic only: input width and number of classes.
      data_seed: synthetic only: seed of the numpy generator drawing inputs and labels.

    Returns:
      A :class:`Dataset` of numpy arrays (:func:`device_data` puts it on the device).

    Raises:
      DataError: unknown name or source, invalid sizes, missing/corrupt files, failed download.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    for arg, value, low in (
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("features", features, 1),
        ("num_classes", num_classes, 2),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low
        ):
            raise DataError(f"{arg} must be an integer >= {low}, got {value!r}")
    if key == "synthetic":
        if source != "idx":
            raise DataError("source='tfds' applies to fashion_mnist and mnist only")
        return _synthetic(
            n_train=SYNTHETIC_SHAPE["n_train"] if n_train is None else int(n_train),
            n_test=SYNTHETIC_SHAPE["n_test"] if n_test is None else int(n_test),
            features=SYNTHETIC_SHAPE["features"] if features is None else int(features),
            num_classes=SYNTHETIC_SHAPE["num_classes"] if num_classes is None else int(num_classes),
            data_seed=data_seed,
        )
    extra = [a for a, v in (("features", features), ("num_classes", num_classes)) if v is not None]
    if extra:
        raise DataError(
            f"{', '.join(extra)} can only be set for the synthetic dataset, not {key}; drop it"
        )
    if key == "digits":
        if source != "idx":
            raise DataError("source='tfds' applies to fashion_mnist and mnist only")
        x_train, y_train, x_test, y_test = _digits_arrays()
        origin = "embedded: scikit-learn load_digits"
    elif source == "tfds":
        x_train, y_train, x_test, y_test = _tfds_arrays(key, data_dir, n_train, n_test)
        origin = f"tfds: {key} in {data_dir or 'the TFDS default data_dir'}"
    else:
        directory = find_idx_dir(key, data_dir)
        if directory is None and data_dir is not None:  # named by the user: no fallback
            root = pathlib.Path(data_dir).expanduser()
            state = "does not exist" if not root.exists() else "does not hold them"
            names = ", ".join(IDX_FILES)
            raise DataError(
                f"--data-dir {data_dir} {state}: {key} needs the IDX files {names} (or "
                f"uncompressed) in {root}, {root / key} or {root / key.replace('_', '-')}; "
                "nothing was created or downloaded (without "
                f"--data-dir they are searched in ${DATA_DIR_ENV}, the cache and "
                f"{', '.join(SYSTEM_DATA_DIRS)}, and downloaded from {mirror_url(key)})"
            )
        if directory is None:
            if not download:
                looked = ", ".join(str(r) for r in search_roots(data_dir))
                raise DataError(
                    f"{key}: IDX files not found in {looked} and download=False; "
                    + _where_to_put(IDX_FILES, download_dir(key, data_dir), mirror_url(key))
                )
            directory = fetch_idx_files(key, download_dir(key, data_dir))
        x_train, y_train, x_test, y_test = _read_idx_dataset(directory)
        origin = str(directory.resolve())
    x_train, y_train = _head(key, "train", x_train, y_train, n_train)
    x_test, y_test = _head(key, "test", x_test, y_test, n_test)
    mean, std = _pixel_stats(x_train)
    return Dataset(
        key, x_train, y_train, x_test, y_test, 10, mean, std, origin
    )  # all have 10 classes


# --------------------------------------------------------------------------------------------
# synthetic and digits


def _synthetic(*, n_train: int, n_test: int, features: int, num_classes: int, data_seed: int):
    """The width examples' data: ``x ~ N(0, 1)`` float32, ``y ~ U{0..num_classes-1}`` int32."""
    rng = np.random.default_rng(data_seed)
    x_train = rng.standard_normal((n_train, features), dtype=np.float32)
    y_train = rng.integers(0, num_classes, n_train, dtype=np.int32)
    x_test = rng.standard_normal((n_test, features), dtype=np.float32)
    y_test = rng.integers(0, num_classes, n_test, dtype=np.int32)
    origin = f"generated: N(0, 1) inputs, uniform labels, data_seed={data_seed}"
    return Dataset("synthetic", x_train, y_train, x_test, y_test, num_classes, 0.0, 1.0, origin)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, split 80/20 stratified with a fixed seed (no network).

    The split is :data:`DIGITS_SPLIT_FILE`: the row order ``train_test_split(arange(1797),
    test_size=0.2, stratify=y, random_state=0)`` returns (train rows, then test rows), recorded
    once so that the split never depends on the installed scikit-learn. The pixels are read from
    scikit-learn's ``digits.csv.gz`` without importing scikit-learn (≈1.5 s of imports), or through
    ``load_digits`` where that file is not found.
    """
    x, y = _digits_table()
    order = np.load(DIGITS_SPLIT_FILE)
    if order.shape != (y.shape[0],) or not np.array_equal(np.sort(order), np.arange(y.shape[0])):
        raise DataError(
            f"{DIGITS_SPLIT_FILE} is not a split of the {y.shape[0]} bundled digits; "
            "reinstall jaxlr"
        )
    n_test = int(np.ceil(DIGITS_TEST_FRACTION * y.shape[0]))  # as train_test_split rounds
    train, test = order[:-n_test], order[-n_test:]
    return x[train], y[train], x[test], y[test]


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits in scikit-learn's order: pixels ``uint8`` 0..16, labels ``int32``."""
    spec = importlib.util.find_spec("sklearn")  # where it is installed, without importing it
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    csv = pathlib.Path(roots[0], "datasets", "data", "digits.csv.gz") if roots else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    else:  # a scikit-learn that keeps its data elsewhere
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data, bunch.target
    return x.astype(np.uint8), y.astype(np.int32)


def _head(name: str, split: str, x: np.ndarray, y: np.ndarray, n: int | None):
    """The first ``n`` rows of a split (all when ``n`` is None)."""
    if n is None:
        return x, y
    if n > x.shape[0]:
        raise DataError(
            f"n_{split}={n} exceeds the {x.shape[0]} {split} examples of {name}; use at most that"
        )
    return x[:n], y[:n]


def _pixel_stats(x: np.ndarray) -> tuple[float, float]:
    """Exact scalar mean and (population) std of all entries of ``x``, in float64."""
    if x.dtype == np.uint8:  # exact and cheap through a histogram of the 256 values
        counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        total = counts.sum()
        mean = float(counts @ values / total)
        var = float(counts @ (values - mean) ** 2 / total)
    else:
        mean = float(np.mean(x, dtype=np.float64))
        var = float(np.var(x, dtype=np.float64))
    std = float(np.sqrt(var))
    return mean, std if std > 0 else 1.0


# --------------------------------------------------------------------------------------------
# IDX files


def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/jaxlr``, or ``~/.cache/jaxlr`` when ``XDG_CACHE_HOME`` is unset."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "jaxlr"


# System-wide dataset directories, searched last (Debian's ``dataset-fashion-mnist`` package
# installs ``/usr/share/datasets/fashion-mnist/*.gz``).
SYSTEM_DATA_DIRS: tuple[str, ...] = ("/usr/share/datasets",)


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[pathlib.Path]:
    """The roots searched for IDX files: ``[data_dir]`` alone when given, else
    ``$JAXLR_DATA_DIR``, the cache, then :data:`SYSTEM_DATA_DIRS`."""
    if data_dir is not None:
        return [pathlib.Path(data_dir).expanduser()]
    roots = []
    if os.environ.get(DATA_DIR_ENV):
        roots.append(pathlib.Path(os.environ[DATA_DIR_ENV]).expanduser())
    roots.append(cache_dir())
    roots.extend(pathlib.Path(d) for d in SYSTEM_DATA_DIRS)
    return roots


def find_idx_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path | None:
    """The first of ``<root>/<name>``, ``<root>/<name with - for _>``, ``<root>`` (roots from
    :func:`search_roots`) holding all four IDX files, or None."""
    for root in search_roots(data_dir):
        for directory in (root / name, root / name.replace("_", "-"), root):
            if all(_idx_path(directory, f) is not None for f in IDX_FILES):
                return directory
    return None


def download_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Where missing IDX files are downloaded: ``<data_dir>/<name>``, else ``<cache>/<name>``."""
    root = pathlib.Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    return root / name


# --------------------------------------------------------------------------------------------
# TFDS (array_record, no TensorFlow)


def _tfds_arrays(name: str, data_dir: Any, n_train: int | None, n_test: int | None):
    """Train/test arrays from a prepared ``array_record`` TFDS dataset; never downloads."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"source='tfds' needs tensorflow-datasets ({e}): pip install jaxlr[tfds]"
        ) from e
    data_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    fix = (
        f"prepare it with TensorFlow installed: `tfds build {name} --file_format=array_record"
        f"{'' if data_dir is None else ' --data_dir=' + data_dir}`, or use source='idx'"
    )
    builder_kwargs = {"file_format": "array_record"}
    try:
        builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
        prepared = builder.is_prepared() and {"train", "test"} <= set(builder.info.splits)
    except Exception as e:  # tfds raises many types; report them all the same way
        raise DataError(
            f"TFDS cannot open {name} in {data_dir or 'its default data_dir'}: {e}"
        ) from e
    if not prepared:
        raise DataError(f"TFDS dataset {name} is not prepared in {builder.data_dir}; {fix}")
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        try:
            records = tfds.data_source(
                name,
                split=split,
                data_dir=data_dir,
                download=False,
                builder_kwargs=builder_kwargs,
            )
        except Exception as e:
            raise DataError(
                f"TFDS cannot read {name}[{split}] from {builder.data_dir} as array_record ({e}); "
                f"{fix}"
            ) from e
        if n is not None and n > len(records):
            raise DataError(
                f"n_{split}={n} exceeds the {len(records)} {split} examples of {name}; use at "
                "most that"
            )
        items = records.__getitems__(list(range(len(records) if n is None else n)))
        images = np.stack([np.asarray(item["image"]) for item in items]) if items else None
        if images is None or images.dtype != np.uint8 or images.shape[1:] != (28, 28, 1):
            got = "no examples" if images is None else f"{images.dtype} {images.shape[1:]}"
            raise DataError(
                f"TFDS {name}[{split}] in {builder.data_dir}: expected uint8 images (28, 28, 1), "
                f"got {got}"
            )
        labels = np.asarray([item["label"] for item in items], dtype=np.int32)
        out += [images.reshape(len(items), -1), labels]
    return tuple(out)


def _text_device_data(ds: TextDataset, eval_chunk: int, sharding: Any) -> DeviceData:
    """Training bytes as ``x_train``; validation windows ``(chunks, chunk, context + 1)`` as
    ``x_test`` with their 0/1 mask (``y_train``, ``y_test``: unused zeros)."""

    starts = ds.eval_starts
    windows = ds.val[starts[:, None] + np.arange(ds.context + 1)]
    n = len(starts)
    chunk = max(1, min(eval_chunk // ds.context, n))  # sequences per evaluation chunk
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    windows = np.concatenate([windows, np.zeros((pad, ds.context + 1), windows.dtype)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    arrays = DeviceData(
        np.asarray(ds.train),
        np.zeros(1, np.int32),
        windows.reshape(n_chunks, chunk, ds.context + 1),
        np.zeros((n_chunks, chunk), np.int32),
        mask.reshape(n_chunks, chunk),
    )
    return jax.device_put(arrays, sharding)


def load_config_dataset(cfg: Any) -> Any:
    """The :class:`Dataset` that ``cfg`` (a :class:`jaxlr.config.SweepConfig`) asks for (a
    :class:`TextDataset` for ``--model gpt``)."""
    from jaxlr import families

    if families.family_of(cfg).data == "text":
        return load_text_dataset(cfg)
    return load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        source=cfg.data_source,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        features=cfg.features,
        num_classes=cfg.num_classes,
        data_seed=cfg.data_seed,
    )
