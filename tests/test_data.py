"""Tests for jaxlr.data: IDX reader, file lookup, download, TFDS, digits and synthetic.

References are independent of the code under test: IDX files are written here by a tiny
``struct``-based writer, statistics are recomputed with numpy, digests with hashlib, and the
digest table is checked against tensorflow_datasets' own url_checksums.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pathlib
import socket
import struct
import sys
import threading
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr import data
from jaxlr.data import DataError, Dataset, load_dataset, read_idx

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic 00 00 code ndim, big-endian sizes, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: pathlib.Path, array: np.ndarray, *, compress: bool = True) -> pathlib.Path:
    raw = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def make_idx_set(directory: pathlib.Path, n_train=200, n_test=50, seed=0, compress=True):
    """Writes the four IDX files of a small 28x28 dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for file, array in arrays.items():
        name = file if compress else file.removesuffix(".gz")
        write_idx(directory / name, array, compress=compress)
    return arrays


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No real cache, data dir or mirror leaks in: HOME is a fresh tmp dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "XDG_CACHE_HOME",
        "JAXLR_DATA_DIR",
        "JAXLR_MNIST_MIRROR",
        "JAXLR_FASHION_MNIST_MIRROR",
        "TFDS_DATA_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# ------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips(tmp_path, dtype, compress):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((7, 3, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    out = read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_one_dimensional(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


def test_read_idx_rejects_wrong_magic(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    raw[0] = 0x1A
    path = tmp_path / "wrong-magic.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="wrong magic") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_rejects_unknown_type_code(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    raw[2] = 0x07
    path = tmp_path / "bad-code"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="type code") as e:
        read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [1, 100])
def test_read_idx_rejects_truncated_payload(tmp_path, cut):
    raw = idx_bytes(np.ones((5, 28, 28), np.uint8))[:-cut]
    path = tmp_path / "truncated-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_rejects_extra_bytes_and_truncated_header(tmp_path):
    long = tmp_path / "long"
    long.write_bytes(idx_bytes(np.ones((2, 2), np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="long"):
        read_idx(long)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.ones((2, 2), np.uint8))[:6])
    with pytest.raises(DataError, match=r"short.*truncated header"):
        read_idx(short)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))[:-20])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_mismatched_image_and_label_counts_name_both_files(tmp_path):
    make_idx_set(tmp_path, n_train=20, n_test=5)
    write_idx(tmp_path / FILES[1], np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="19 labels") as e:
        load_dataset("fashion_mnist", data_dir=tmp_path, download=False)
    assert str(tmp_path / FILES[0]) in str(e.value)
    assert str(tmp_path / FILES[1]) in str(e.value)


def test_truncated_file_in_dataset_names_the_file(tmp_path):
    make_idx_set(tmp_path, n_train=20, n_test=5)
    bad = tmp_path / FILES[2]
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-7]))
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(bad) in str(e.value)


# ------------------------------------------------------------------------------------------
# IDX datasets: layout, lookup order, normalization


def _check_idx_dataset(ds: Dataset, arrays, name="fashion_mnist"):
    x_train = arrays[FILES[0]].reshape(len(arrays[FILES[0]]), 784)
    x_test = arrays[FILES[2]].reshape(len(arrays[FILES[2]]), 784)
    assert ds.name == name and ds.num_classes == 10 and ds.in_features == 784
    assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_train, arrays[FILES[1]])
    np.testing.assert_array_equal(ds.y_test, arrays[FILES[3]])
    ref = x_train.astype(np.float64)
    assert ds.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert ds.std == pytest.approx(ref.std(), rel=1e-12)


def test_fashion_mnist_from_data_dir(tmp_path, no_network):
    arrays = make_idx_set(tmp_path / "fashion_mnist", n_train=200, n_test=50)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert (ds.n_train, ds.n_test) == (200, 50)
    _check_idx_dataset(ds, arrays)
    x = ds.normalize(ds.x_train)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    ref = (ds.x_train.astype(np.float64) - ds.x_train.mean()) / ds.x_train.std()
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5


def test_flat_layout_plain_files_and_aliases(tmp_path, no_network):
    arrays = make_idx_set(tmp_path, n_train=30, n_test=10, compress=False)
    _check_idx_dataset(load_dataset("Fashion-MNIST", data_dir=tmp_path), arrays)
    _check_idx_dataset(load_dataset("mnist", data_dir=tmp_path), arrays, name="mnist")


def test_subsampling_keeps_the_first_rows(tmp_path):
    arrays = make_idx_set(tmp_path / "mnist", n_train=40, n_test=12)
    ds = load_dataset("mnist", data_dir=tmp_path, n_train=25, n_test=5)
    np.testing.assert_array_equal(ds.x_train, arrays[FILES[0]][:25].reshape(25, 784))
    np.testing.assert_array_equal(ds.y_test, arrays[FILES[3]][:5])
    assert ds.mean == pytest.approx(arrays[FILES[0]][:25].mean(dtype=np.float64), rel=1e-12)
    with pytest.raises(DataError, match="n_train=41 exceeds the 40"):
        load_dataset("mnist", data_dir=tmp_path, n_train=41)


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, isolated_env, monkeypatch):
    cache_arrays = make_idx_set(isolated_env / ".cache" / "jaxlr" / "mnist", n_train=11, seed=3)
    _check_idx_dataset(load_dataset("mnist", download=False), cache_arrays, name="mnist")

    xdg = tmp_path / "xdg"
    xdg_arrays = make_idx_set(xdg / "jaxlr", n_train=12, seed=4)  # flat layout in the cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    _check_idx_dataset(load_dataset("mnist", download=False), xdg_arrays, name="mnist")

    env_arrays = make_idx_set(tmp_path / "env" / "mnist", n_train=13, seed=5)
    monkeypatch.setenv("JAXLR_DATA_DIR", str(tmp_path / "env"))
    _check_idx_dataset(load_dataset("mnist", download=False), env_arrays, name="mnist")

    arg_arrays = make_idx_set(tmp_path / "arg", n_train=14, seed=6)
    ds = load_dataset("mnist", data_dir=tmp_path / "arg", download=False)
    _check_idx_dataset(ds, arg_arrays, name="mnist")
    assert ds.origin == str((tmp_path / "arg").resolve())
    # A data_dir you name is the only place looked at: an incomplete one is an error that names
    # it and the missing file, never a silent fallback to the complete set in $JAXLR_DATA_DIR.
    (tmp_path / "arg" / FILES[3]).unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path / "arg", download=False)
    assert str(tmp_path / "arg") in str(e.value) and FILES[3] in str(e.value)
    assert str(tmp_path / "env") not in str(e.value)
    with pytest.raises(DataError):
        load_dataset("mnist", data_dir=tmp_path / "does" / "not" / "exist", download=False)


def test_system_dir_is_searched_last_in_debian_layout(tmp_path, monkeypatch):
    """Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist/*.gz."""
    arrays = make_idx_set(tmp_path / "share" / "fashion-mnist", n_train=9, seed=8)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", (str(tmp_path / "share"),))
    ds = load_dataset("fashion_mnist", download=False)
    _check_idx_dataset(ds, arrays)
    assert ds.origin == str((tmp_path / "share" / "fashion-mnist").resolve())
    assert data.search_roots()[-1] == tmp_path / "share"
    assert data.search_roots(tmp_path / "x") == [tmp_path / "x"]


def test_missing_files_without_download_says_where(tmp_path, no_network):
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "fashion_mnist") in msg
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in msg
    assert all(f in msg for f in FILES) and "\n" not in msg


# ------------------------------------------------------------------------------------------
# Download through a loopback HTTP server


class CountingServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``directory``; counts the GET requests."""

    def __init__(self, directory: pathlib.Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mirror(tmp_path):
    """Generated IDX files served over loopback: (server, arrays, sha256 per file)."""
    served = tmp_path / "served"
    arrays = make_idx_set(served, n_train=60, n_test=20, seed=7)
    digests = {f: hashlib.sha256((served / f).read_bytes()).hexdigest() for f in FILES}
    server = CountingServer(served)
    yield server, arrays, digests
    server.close()


def test_download_verifies_and_caches(tmp_path, mirror, monkeypatch):
    server, arrays, digests = mirror
    source = data.IdxSource(server.url, "JAXLR_FASHION_MNIST_MIRROR", digests)
    monkeypatch.setitem(data.IDX_SOURCES, "fashion_mnist", source)
    target = tmp_path / "data"
    # a data_dir you name is never downloaded into: it holds the files or is an error
    with pytest.raises(DataError, match="nothing was created or downloaded"):
        load_dataset("fashion_mnist", data_dir=target)
    assert not target.exists() and server.requests == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(target))  # without data_dir: into the cache
    ds = load_dataset("fashion_mnist")
    _check_idx_dataset(ds, arrays)
    assert sorted(server.requests) == sorted("/" + f for f in FILES)
    landed = target / "jaxlr" / "fashion_mnist"
    assert sorted(p.name for p in landed.iterdir()) == sorted(FILES)  # no temp files left
    for f in FILES:
        assert hashlib.sha256((landed / f).read_bytes()).hexdigest() == digests[f]
    _check_idx_dataset(load_dataset("fashion_mnist", data_dir=landed), arrays)
    assert len(server.requests) == 4  # the second load did not download again


def test_download_into_cache_through_mirror_env(mirror, isolated_env, monkeypatch):
    server, arrays, digests = mirror
    monkeypatch.setenv("JAXLR_MNIST_MIRROR", server.url.rstrip("/"))
    source = data.IdxSource("http://unused.invalid/", "JAXLR_MNIST_MIRROR", digests)
    monkeypatch.setitem(data.IDX_SOURCES, "mnist", source)
    _check_idx_dataset(load_dataset("mnist"), arrays, name="mnist")
    cached = isolated_env / ".cache" / "jaxlr" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(FILES)
    assert len(server.requests) == 4


def test_fetch_only_missing_files(tmp_path, mirror):
    server, arrays, digests = mirror
    target = tmp_path / "partial"
    write_idx(target / FILES[1], arrays[FILES[1]])
    out = data.fetch_idx_files("mnist", target, base_url=server.url, sha256=digests)
    assert out == target
    assert sorted(server.requests) == sorted("/" + f for f in FILES if f != FILES[1])


def test_download_with_wrong_digest_keeps_nothing(tmp_path, mirror):
    server, _, digests = mirror
    wrong = dict(digests, **{FILES[0]: "0" * 64})
    target = tmp_path / "wrong"
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        data.fetch_idx_files("fashion_mnist", target, base_url=server.url, sha256=wrong)
    assert FILES[0] in str(e.value)
    assert not target.exists()  # neither the bad file, nor its temp file, nor the directory


def test_download_http_error_is_a_data_error(tmp_path, mirror):
    server, _, digests = mirror
    with pytest.raises(DataError, match="HTTP 404"):
        data.fetch_idx_files("mnist", tmp_path / "t", base_url=server.url + "nope/", sha256=digests)


def test_unreachable_mirror_says_where_to_put_the_files(tmp_path, monkeypatch):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    url = f"http://127.0.0.1:{port}/fmnist/"
    monkeypatch.setenv("JAXLR_FASHION_MNIST_MIRROR", url)
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "fashion_mnist") in msg and url in msg
    assert all(f in msg for f in FILES) and "\n" not in msg
    assert not any((tmp_path / "fashion_mnist").glob("*"))


def test_digest_table_matches_tfds_checksums():
    tfds = pytest.importorskip("tensorflow_datasets")
    folder = pathlib.Path(tfds.__file__).parent / "url_checksums"
    for name, url in (
        ("fashion_mnist", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        ("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    ):
        rows = [line.split("\t") for line in (folder / f"{name}.txt").read_text().splitlines()]
        expected = {row[3]: row[2] for row in rows if len(row) == 4}
        assert dict(data.IDX_SOURCES[name].sha256) == expected
        assert data.IDX_SOURCES[name].url == url


# ------------------------------------------------------------------------------------------
# TFDS (array_record, without TensorFlow)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A fashion_mnist TFDS dataset of 300/80 generated examples in array_record format.

    Image ``i`` of a split stores ``i`` in its first two pixels, so order can be recovered.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    image_mod = pytest.importorskip("PIL.Image")
    version = tfds.builder_cls("fashion_mnist").VERSION

    def split(n, seed):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        return images, rng.integers(0, 10, n).astype(np.int64)

    splits = {"train": split(300, 0), "test": split(80, 1)}

    class TinyFashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "fashion_mnist"
        VERSION = version

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {k: self._generate_examples(*v) for k, v in splits.items()}

        def _generate_examples(self, images, labels):
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                # PIL encodes the PNG: tfds' own numpy encoder would need TensorFlow.
                yield i, {"image": image_mod.fromarray(image), "label": int(label)}

    root = tmp_path_factory.mktemp("tfds")
    TinyFashionMnist(data_dir=str(root), file_format="array_record").download_and_prepare()
    return root, splits


def test_tfds_source_reads_array_record(tfds_dir, no_network):
    root, splits = tfds_dir
    ds = load_dataset("fashion_mnist", source="tfds", data_dir=root)
    assert (ds.n_train, ds.n_test, ds.in_features, ds.num_classes) == (300, 80, 784, 10)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    for x, y, (images, labels) in (
        (ds.x_train, ds.y_train, splits["train"]),
        (ds.x_test, ds.y_test, splits["test"]),
    ):
        index = x[:, 0].astype(np.int64) + 256 * x[:, 1].astype(np.int64)  # TFDS shuffles records
        assert sorted(index) == list(range(len(images)))
        np.testing.assert_array_equal(x, images[index].reshape(len(images), 784))
        np.testing.assert_array_equal(y, labels[index])
    ref = splits["train"][0].astype(np.float64)
    assert ds.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert ds.std == pytest.approx(ref.std(), rel=1e-12)
    head = load_dataset("fashion_mnist", source="tfds", data_dir=root, n_train=30, n_test=7)
    np.testing.assert_array_equal(head.x_train, ds.x_train[:30])
    np.testing.assert_array_equal(head.y_test, ds.y_test[:7])


def test_tfds_not_prepared_says_where(tmp_path, no_network):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="not prepared") as e:
        load_dataset("mnist", source="tfds", data_dir=tmp_path)
    assert str(tmp_path / "mnist") in str(e.value) and "tfds build mnist" in str(e.value)


def test_tfds_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
    with pytest.raises(DataError, match=r"pip install jaxlr\[tfds\]"):
        load_dataset("mnist", source="tfds")


# ------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_deterministic_stratified_and_complete(no_network):
    from sklearn.datasets import load_digits

    a, b = load_dataset("digits"), load_dataset("digits")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.n_train, a.n_test, a.in_features, a.num_classes) == (1437, 360, 64, 10)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int32
    assert a.x_train.max() == 16 and a.x_train.min() == 0

    full = load_digits()
    total = np.bincount(full.target, minlength=10)
    test_counts = np.bincount(a.y_test, minlength=10)
    train_counts = np.bincount(a.y_train, minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, total)
    assert np.all(np.abs(test_counts - total * a.n_test / total.sum()) <= 1)
    assert np.all(np.abs(train_counts - total * a.n_train / total.sum()) <= 1)

    # The split is a partition of the bundled images (as multisets of (pixels, label) rows).
    def rows(x, y):
        return sorted(map(bytes, np.column_stack([x.astype(np.uint8), y.astype(np.uint8)])))

    ours = rows(np.concatenate([a.x_train, a.x_test]), np.concatenate([a.y_train, a.y_test]))
    assert ours == rows(full.data, full.target)


def test_digits_equal_scikit_learns_split_row_for_row(no_network):
    """The recorded split and the csv reader give exactly what scikit-learn's own
    ``load_digits`` + stratified ``train_test_split`` give, in the same order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    full = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        full.data, full.target, test_size=0.2, stratify=full.target, random_state=0
    )
    ds = load_dataset("digits")
    for ours, ref in ((ds.x_train, x_tr), (ds.x_test, x_te), (ds.y_train, y_tr), (ds.y_test, y_te)):
        np.testing.assert_array_equal(ours, ref.astype(ours.dtype))
        np.testing.assert_array_equal(ours.astype(ref.dtype), ref)  # no value lost in the cast


def test_digits_without_the_csv_reads_through_scikit_learn(no_network, monkeypatch):
    import importlib.util

    real = data.load_dataset("digits")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    again = data.load_dataset("digits")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, field), getattr(real, field))


def test_a_damaged_digits_split_file_is_a_clear_error(no_network, monkeypatch, tmp_path):
    bad = tmp_path / "split.npy"
    np.save(bad, np.zeros(1797, np.uint16))
    monkeypatch.setattr(data, "DIGITS_SPLIT_FILE", bad)
    with pytest.raises(data.DataError, match="not a split of the 1797 bundled digits"):
        data.load_dataset("digits")


def test_digits_normalization_uses_train_pixels(no_network):
    ds = load_dataset("digits")
    ref = ds.x_train.astype(np.float64)
    assert ds.mean == pytest.approx(ref.mean(), rel=1e-12)
    assert ds.std == pytest.approx(ref.std(), rel=1e-12)
    x = ds.normalize(ds.x_train)
    assert x.dtype == np.float32
    assert abs(float(x.astype(np.float64).mean())) < 1e-6
    assert abs(float(x.astype(np.float64).std()) - 1) < 1e-6


# ------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_defaults():
    ds = load_dataset("synthetic")
    assert (ds.n_train, ds.n_test, ds.in_features, ds.num_classes) == (60_000, 10_000, 784, 10)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert (ds.mean, ds.std) == (0.0, 1.0)
    x = ds.x_train[:1000].astype(np.float64)  # 784,000 N(0, 1) draws: std error 1.1e-3
    assert abs(x.mean()) < 6e-3 and abs(x.std() - 1) < 6e-3
    assert abs(float(ds.x_test.mean(dtype=np.float64))) < 2e-3
    counts = np.bincount(ds.y_train, minlength=10)
    assert counts.shape == (10,) and np.all(np.abs(counts - 6000) < 5 * np.sqrt(6000))


def test_synthetic_overrides_and_seeding():
    ds = load_dataset("synthetic", n_train=100, n_test=20, features=10, num_classes=2)
    assert ds.x_train.shape == (100, 10) and ds.x_test.shape == (20, 10)
    assert set(np.unique(ds.y_train)) == {0, 1} and ds.y_test.max() <= 1
    again = load_dataset("synthetic", n_train=100, n_test=20, features=10, num_classes=2)
    other = load_dataset(
        "synthetic", n_train=100, n_test=20, features=10, num_classes=2, data_seed=1
    )
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_test, again.y_test)
    assert not np.array_equal(ds.x_train, other.x_train)
    np.testing.assert_array_equal(ds.normalize(ds.x_test), ds.x_test)  # mean 0, std 1


# ------------------------------------------------------------------------------------------
# Dataset and argument errors


def test_normalize_numpy_jax_and_jit_agree():
    ds = load_dataset("digits")
    ref = ((ds.x_test.astype(np.float64) - ds.mean) / ds.std).astype(np.float32)
    x_dev = jax.device_put(ds.x_test)
    out_np = ds.normalize(ds.x_test)
    out_jax = data.normalize(x_dev, ds.mean, ds.std)
    out_jit = jax.jit(lambda x: data.normalize(x, ds.mean, ds.std))(x_dev)
    assert isinstance(out_np, np.ndarray) and isinstance(out_jax, jax.Array)
    for out in (out_np, out_jax, out_jit):
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
    assert ds.normalize(ds.x_test, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_device_data_keeps_raw_dtypes_and_pads_the_test_set():
    ds = load_dataset("digits", n_train=100, n_test=30)
    dev = data.device_data(ds, eval_chunk=8)  # 30 test examples -> 4 chunks of 8, 2 padded
    assert all(isinstance(a, jax.Array) for a in dev)
    assert dev.x_train.dtype == jnp.uint8 and dev.y_train.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(dev.x_train), ds.x_train)
    np.testing.assert_array_equal(np.asarray(dev.y_train), ds.y_train)
    assert dev.x_test.shape == (4, 8, 64) and dev.y_test.shape == dev.test_mask.shape == (4, 8)
    np.testing.assert_array_equal(np.asarray(dev.x_test).reshape(32, 64)[:30], ds.x_test)
    np.testing.assert_array_equal(np.asarray(dev.y_test).reshape(32)[:30], ds.y_test)
    mask = np.asarray(dev.test_mask).reshape(32)
    assert mask.dtype == np.float32 and mask[:30].all() and not mask[30:].any()
    whole = data.device_data(ds)  # the default chunk covers the whole test set
    assert whole.x_test.shape == (1, 30, 64) and bool(whole.test_mask.all())


def test_origin_says_where_the_data_came_from():
    assert load_dataset("digits").origin.startswith("embedded")
    assert "data_seed=3" in load_dataset("synthetic", n_train=4, n_test=2, data_seed=3).origin


def test_dataset_validates_fields():
    x = np.zeros((4, 3), np.uint8)
    y = np.zeros(4, np.int32)
    with pytest.raises(DataError, match="int32"):
        Dataset("d", x, y.astype(np.int64), x, y, 2, 0.0, 1.0)
    with pytest.raises(DataError, match="labels"):
        Dataset("d", x, y[:3], x, y, 2, 0.0, 1.0)
    with pytest.raises(DataError, match="std"):
        Dataset("d", x, y, x, y, 2, 0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "cifar10"}, "digits, fashion_mnist, mnist, synthetic"),
        ({"name": "digits", "features": 8}, "synthetic"),
        ({"name": "fashion_mnist", "num_classes": 5}, "synthetic"),
        ({"name": "digits", "n_train": 0}, "n_train"),
        ({"name": "synthetic", "num_classes": 1}, "num_classes"),
        ({"name": "digits", "source": "tfds"}, "fashion_mnist and mnist"),
        ({"name": "mnist", "source": "hub"}, "idx, tfds"),
        ({"name": "digits", "n_test": 361}, "n_test=361 exceeds the 360"),
    ],
)
def test_invalid_arguments_raise_data_error(kwargs, match, no_network):
    with pytest.raises(DataError, match=match):
        load_dataset(**kwargs)
