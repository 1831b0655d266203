r"""Byte-level text corpora for the GPT family: no network, no tokenizer, numpy only.

A corpus is a sequence of bytes; each byte is a token (:data:`VOCAB` = 256). Sources:

* **The default corpus** (``load_text(None)``): the Python standard library's own source and
  documentation text, present on every Python installation -- the ``.py``, ``.txt`` and ``.rst``
  files under ``sysconfig.get_paths()["stdlib"]``, with the test suites
  (``test``/``tests``/``idle_test`` folders) and installed packages (``site-packages``,
  ``dist-packages``) left out, in sorted order of their relative paths, concatenated and cut at
  the first :data:`DEFAULT_MAX_BYTES` (8 MiB) bytes. Its size and SHA-256 are fixed for one
  Python installation (they change with the Python version), so they are recorded.
* **Debian's fortunes** (``load_text(None, corpus="fortunes")``): the text files of
  ``/usr/share/games/fortunes`` (packages ``fortunes-min``, ``fortunes``), same cap.
* **Your own text** (``load_text(path)``, ``--data-dir``): one file, or every text file in a
  directory (recursively, hidden files left out, sorted by relative path), with no cap. A
  Tiny-Shakespeare ``input.txt`` works as is.

A file is *text* when it is not empty, has no NUL byte, and at most
:data:`MAX_INVALID_UTF8_FRACTION` (1%) of its bytes fail to decode as UTF-8 (so Latin-1 prose
passes, a binary file does not). A file you name that is not text is an error
(:class:`jaxlr.data.DataError`, one line saying what was wrong and how to fix it); in a
directory such files are skipped, and a directory with no text file is an error.

Splits and windows. :func:`split` cuts the tokens contiguously: the first
:math:`n - \lfloor f n \rfloor` bytes train, the last :math:`\lfloor f n \rfloor` validate
(:math:`f` = ``val_fraction``). A training example is a window of ``context + 1`` consecutive
bytes starting anywhere, ``x = s[i : i + T]``, ``y = s[i + 1 : i + T + 1]`` (:math:`T` =
``context``), so a part of :math:`n` bytes has :math:`n - T` windows (:func:`windows`);
validation uses the non-overlapping windows :func:`eval_starts`. The loss is the mean
next-byte cross-entropy in nats, reported also as bits per byte,
:math:`\mathrm{bpb} = \mathcal{L} / \ln 2` (:func:`bits_per_byte`).

Example:
  >>> import pathlib, tempfile
  >>> d = pathlib.Path(tempfile.mkdtemp())
  >>> _ = (d / "input.txt").write_text("First Citizen:\nBefore we proceed any further, hear me.\n")
  >>> corpus = load_text(str(d / "input.txt"))
  >>> corpus.n_bytes, corpus.tokens.dtype, corpus.sha256[:12]
  (55, dtype('uint8'), '6f9e0afa1a37')
  >>> train, val = split(corpus.tokens, 0.25)
  >>> len(train), len(val), windows(len(val), 8)
  (42, 13, 5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import sys
import sysconfig
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from jaxlr.idx import DataError  # the class jaxlr.data exports, without importing JAX

VOCAB = 256
"""Byte-level vocabulary: every byte value is a token."""

DEFAULT_MAX_BYTES = 8 * 2**20
"""Cap on the built-in corpora: the first 8 MiB of their concatenated files."""

MAX_INVALID_UTF8_FRACTION = 0.01
"""A file with more than this fraction of bytes that are not valid UTF-8 is not text."""

TEXT_SUFFIXES: tuple[str, ...] = (".py", ".txt", ".rst")
"""The standard library's files that make the default corpus."""

EXCLUDED_DIRS: frozenset[str] = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
"""Folders of the standard library left out of the default corpus."""

FORTUNES_DIR = pathlib.Path("/usr/share/games/fortunes")
"""Where Debian's ``fortunes`` packages install their text."""

Corpus = Literal["stdlib", "fortunes"]
CORPORA: tuple[str, ...] = ("stdlib", "fortunes")


@dataclasses.dataclass(frozen=True, eq=False)
class TextCorpus:
    """A byte-level corpus and where it came from.

    Attributes:
      tokens: the bytes, ``uint8``, shape ``(n_bytes,)``.
      origin: one line saying what the corpus is (built-in corpus or the path given).
      files: the files read, in the order they were concatenated.
      sha256: hex SHA-256 of the concatenated bytes (exactly ``tokens``).
    """

    tokens: np.ndarray
    origin: str
    files: tuple[str, ...]
    sha256: str

    @property
    def n_bytes(self) -> int:
        """Number of bytes (= tokens)."""
        return int(self.tokens.shape[0])

    def record(self) -> dict[str, Any]:
        """What config.json records: origin, size, SHA-256 and number of files."""
        return {
            "origin": self.origin,
            "n_bytes": self.n_bytes,
            "sha256": self.sha256,
            "n_files": len(self.files),
        }


def text_problem(data: bytes) -> str | None:
    """Why ``data`` is not text (``"is empty"``, ``"has NUL bytes"``, ...), or None if it is."""
    if not data:
        return "is empty"
    if b"\x00" in data:
        return "has NUL bytes (a binary file?)"
    decoded = data.decode("utf-8", errors="replace")
    invalid = decoded.count("\ufffd") - data.count("\ufffd".encode())
    if invalid > MAX_INVALID_UTF8_FRACTION * len(data):
        return (
            f"is not text: {invalid} of its {len(data)} bytes are not valid UTF-8 "
            f"(more than {MAX_INVALID_UTF8_FRACTION:.0%})"
        )
    return None


def _sorted_files(
    root: pathlib.Path, keep: Callable[[pathlib.PurePath], bool], skip_dirs: frozenset[str]
) -> list[pathlib.Path]:
    """Regular files under ``root`` passing ``keep(relative path)``, sorted by relative path;
    hidden files and folders, and folders named in ``skip_dirs``, are not entered."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in skip_dirs]
        for name in filenames:
            p = pathlib.Path(dirpath, name)
            rel = p.relative_to(root)
            if not name.startswith(".") and p.is_file() and keep(rel):
                found.append((rel.as_posix(), p))
    return [p for _, p in sorted(found)]


def stdlib_dir() -> pathlib.Path:
    """The standard library folder of the running Python (``sysconfig``)."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def default_corpus(corpus: Corpus = "stdlib") -> list[pathlib.Path]:
    """The files of a built-in corpus, in the order they are concatenated (before the cap).

    Args:
      corpus: ``"stdlib"`` -- the standard library's ``.py``/``.txt``/``.rst`` files outside
        its test suites and installed packages; ``"fortunes"`` -- Debian's fortunes text files
        (the ``.dat`` indexes and ``.u8`` duplicates left out).

    Returns:
      The paths, sorted by their path relative to the corpus folder.

    Raises:
      DataError: an unknown corpus, or no files found (e.g. fortunes not installed).
    """
    if corpus == "stdlib":
        root = stdlib_dir()

        def keep(rel: pathlib.PurePath) -> bool:
            return rel.suffix in TEXT_SUFFIXES

        skip = EXCLUDED_DIRS
        install = "your Python installation looks incomplete; pass --data-dir with a text file"
    elif corpus == "fortunes":
        root = FORTUNES_DIR

        def keep(rel: pathlib.PurePath) -> bool:
            return rel.suffix not in (".dat", ".u8")

        skip = frozenset()
        install = "install them (apt-get install fortunes-min) or pass --data-dir"
    else:
        raise DataError(f"unknown corpus {corpus!r}; choose one of: {', '.join(CORPORA)}")
    files = _sorted_files(root, keep, skip) if root.is_dir() else []
    if not files:
        raise DataError(f"no {corpus} corpus files found in {root}: {install}")
    return files


def _concat(
    files: Iterable[pathlib.Path], max_bytes: int | None, strict: bool
) -> tuple[bytes, list[pathlib.Path]]:
    """Concatenates the text files among ``files`` up to ``max_bytes``; ``strict``: a file that
    is not text is an error, otherwise it is skipped."""
    chunks, used, total = [], [], 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(
                f"cannot read {path}: {e.strerror}; check the path and its permissions"
            ) from None
        problem = text_problem(data)
        if problem is not None:
            if strict:
                raise DataError(
                    f"{path} {problem}; pass a UTF-8 text file (or a directory of them) as "
                    "--data-dir"
                )
            continue
        if max_bytes is not None:
            data = data[: max_bytes - total]
        chunks.append(data)
        used.append(path)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    return b"".join(chunks), used


def load_text(
    data_dir: str | None = None,
    *,
    corpus: Corpus = "stdlib",
    max_bytes: int | None = None,
) -> TextCorpus:
    """Reads a byte-level corpus.

    Args:
      data_dir: a text file, or a directory whose text files are concatenated (sorted by
        relative path, hidden files and files that are not text skipped); None for the built-in
        ``corpus``.
      corpus: the built-in corpus when ``data_dir`` is None (see :func:`default_corpus`).
      max_bytes: keep the first ``max_bytes`` bytes; default :data:`DEFAULT_MAX_BYTES` for a
        built-in corpus and no cap for ``data_dir``.

    Returns:
      A :class:`TextCorpus`.

    Raises:
      DataError: a missing path, an empty file, a file that is not text, a directory with no
        text file (one line each, saying how to fix it).
    """
    if max_bytes is not None and max_bytes < 1:
        raise DataError(f"max_bytes must be >= 1, got {max_bytes}")
    if data_dir is None:
        files = default_corpus(corpus)
        cap = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        data, used = _concat(files, cap, strict=False)
        root = stdlib_dir() if corpus == "stdlib" else FORTUNES_DIR
        what = (
            f"the Python {sys.version_info.major}.{sys.version_info.minor} standard library"
            if corpus == "stdlib"
            else "Debian's fortunes"
        )
        origin = (
            f"{what} ({root}): the first {len(data)} bytes of its {len(used)} text files "
            "in sorted order"
        )
    else:
        path = pathlib.Path(data_dir).expanduser()
        if path.is_file():
            data, used = _concat([path], max_bytes, strict=True)
            origin = str(path.resolve())
        elif path.is_dir():
            files = _sorted_files(path, lambda rel: True, frozenset())
            data, used = _concat(files, max_bytes, strict=False)
            if not used:
                raise DataError(
                    f"no text file in {path} ({len(files)} files, none of them non-empty UTF-8 "
                    "text); pass a directory holding text files, or a text file"
                )
            origin = f"{path.resolve()}: {len(used)} text files in sorted order"
        else:
            raise DataError(f"{path} does not exist; pass a text file or a directory of them")
    tokens = np.frombuffer(data, dtype=np.uint8)
    return TextCorpus(
        tokens=tokens,
        origin=origin,
        files=tuple(str(p) for p in used),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def split(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    r"""Contiguous train/validation split: ``tokens[:n - k]``, ``tokens[n - k:]``,
    :math:`k = \lfloor f n \rfloor` (views, no copy).

    Raises:
      DataError: ``val_fraction`` outside (0, 1), or a part that would be empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = int(tokens.shape[0])
    k = math.floor(val_fraction * n)
    if k < 1 or k >= n:
        raise DataError(
            f"a corpus of {n} bytes has no validation part at val_fraction={val_fraction}; "
            "use a larger corpus"
        )
    return tokens[: n - k], tokens[n - k :]


def windows(n_tokens: int, context: int) -> int:
    r"""Number of training windows, :math:`\max(0, n - T)`: starts :math:`0 \dots n - T - 1`,
    each window holding ``context`` inputs and their ``context`` next-byte targets."""
    return max(0, int(n_tokens) - int(context))


def eval_starts(n_tokens: int, context: int) -> np.ndarray:
    r"""Starts of the non-overlapping validation windows, :math:`0, T, 2T, \dots` while
    :math:`i + T < n` (``int32``); every position but the last :math:`(n - 1) \bmod T` is a
    target once."""
    return np.arange(0, windows(n_tokens, context), context, dtype=np.int32)


def window_batch(tokens: Any, starts: Any, context: int) -> tuple[Any, Any]:
    """Inputs and targets of the windows at ``starts``: ``x[b] = tokens[s_b : s_b + T]``,
    ``y[b] = tokens[s_b + 1 : s_b + T + 1]`` (``int32``, shape ``(B, T)``).

    Works on numpy arrays and on JAX arrays, inside ``jit`` (``starts`` may be traced).
    """
    idx = starts[..., None] + np.arange(context + 1, dtype=np.int32)
    w = tokens[idx].astype(np.int32)
    return w[..., :-1], w[..., 1:]


def check_context(corpus: TextCorpus | np.ndarray, context: int, val_fraction: float = 0.1) -> None:
    """Raises DataError if a window of ``context + 1`` bytes does not fit in the training or the
    validation part of ``corpus`` (a :class:`TextCorpus` or its tokens)."""
    tokens = corpus.tokens if isinstance(corpus, TextCorpus) else corpus
    if context < 1:
        raise DataError(f"context must be >= 1, got {context}")
    train, val = split(tokens, val_fraction)
    for name, part in (("validation", val), ("training", train)):
        if windows(len(part), context) < 1:
            raise DataError(
                f"context {context} is too long for the {name} part of the corpus "
                f"({len(part)} bytes of {len(tokens)}, val_fraction={val_fraction}); choose "
                f"--context below {len(part)} or a larger corpus"
            )


def bits_per_byte(loss_nats: Any) -> Any:
    r"""Bits per byte of a mean next-byte cross-entropy in nats: :math:`\mathcal{L} / \ln 2`."""
    return loss_nats / math.log(2.0)


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """Byte-level text for the ``gpt`` family, in the shape the sweep reads a dataset in.

    An "epoch" of a gpt sweep is ``eval_every`` steps, each drawing ``batch_size`` windows of
    ``context + 1`` bytes at uniform random starts of the training part; so ``n_train`` is
    ``eval_every * batch_size`` (sequences per evaluation interval) and ``n_test`` the number of
    non-overlapping validation windows (every validation byte but the last few is a target
    once). ``in_features`` is the context and ``num_classes`` the 256 byte values."""

    train: np.ndarray  # uint8: the training part of the corpus
    val: np.ndarray  # uint8: the validation part (the corpus's last val_fraction, contiguous)
    context: int
    n_train: int
    corpus: Any  # jaxlr.text.TextCorpus
    eval_sequences: int = 0  # validation windows evaluated, evenly spaced (0: all)
    name: str = "text"
    mean: float = 0.0
    std: float = 1.0

    @property
    def origin(self) -> str:
        return self.corpus.origin

    @property
    def record(self) -> dict[str, Any]:
        """What ``config.json`` says of the corpus: origin, size, SHA-256, files."""
        return self.corpus.record()

    @property
    def n_windows(self) -> int:
        """Training windows: the starts ``0 .. len(train) - context - 1``."""
        return windows(len(self.train), self.context)

    @property
    def eval_starts(self) -> np.ndarray:
        """The starts of the validation windows evaluated: ``eval_sequences`` of the
        non-overlapping windows, evenly spaced (all of them if fewer or 0)."""
        starts = eval_starts(len(self.val), self.context)
        k = self.eval_sequences
        if k and k < len(starts):
            starts = starts[np.linspace(0, len(starts) - 1, k).round().astype(int)]
        return starts

    @property
    def n_test(self) -> int:
        return len(self.eval_starts)

    @property
    def in_features(self) -> int:
        return self.context

    @property
    def num_classes(self) -> int:
        return VOCAB


def load_text_dataset(cfg: Any) -> TextDataset:
    """The byte-level corpus of a gpt sweep (``cfg.data_dir``, or the standard library's text),
    checked against the context (a :class:`DataError` in one line if it does not fit)."""
    corpus = load_text(cfg.data_dir)
    check_context(corpus, cfg.context)
    train, val = split(corpus.tokens)
    n_train = cfg.eval_every * cfg.batch_size
    return TextDataset(train, val, cfg.context, n_train, corpus, eval_sequences=cfg.eval_sequences)
