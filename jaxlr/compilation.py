"""Compilation: JAX's persistent compilation cache, counting what was compiled, and the
per-program XLA options (precision, determinism, autotuning, cheap init programs).

A sweep compiles one program per distinct (architecture, optimizer, lane shape). With the
persistent cache on (the default for :func:`jaxlr.runner.run`), the compiled executables are
stored under ``${XDG_CACHE_HOME:-~/.cache}/jaxlr/xla`` and a later sweep with the same shapes
loads them instead of compiling again. It is JAX's own cache (``jax_compilation_cache_dir``):
entries are keyed by the program, the compile options, the devices and the jax/jaxlib versions,
and written atomically, so several sweeps may share the directory.

``JAXLR_COMPILATION_CACHE`` overrides the location (a path) or turns the cache off (``0``,
``off``, ``false`` or ``no``); the sweep's ``--no-compilation-cache`` turns it off too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

CACHE_ENV = "JAXLR_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")


def cache_dir(enabled: bool = True) -> Path | None:
    """Where the persistent compilation cache lives, or ``None`` when it is off."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if not enabled or env.lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxlr" / "xla"


def use_persistent_cache(
    path: Path | None, warn: Callable[[str], None] | None = None
) -> Path | None:
    """Points JAX's persistent compilation cache at ``path`` (no-op for ``None``).

    Every program is cached, however fast it compiled. Returns the directory in use; JAX's own
    setting wins if the user configured one (``JAX_COMPILATION_CACHE_DIR``). A directory that
    cannot be created or written is not worth failing a sweep for: the sweep runs without the
    cache, and ``warn`` is told why.
    """
    if path is None:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        if warn is not None:
            warn(
                f"the compilation cache {path} is not writable ({e.strerror or type(e).__name__});"
                f" compiling without it (set {CACHE_ENV} to a writable directory, or to 0)"
            )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # a cache initialized earlier in this process without a dir
    return path


@dataclasses.dataclass
class CompileStats:
    """Programs compiled in a region, and how many of them came from the persistent cache."""

    cache_dir: str | None = None
    requests: int = 0  # compilations that consulted the persistent cache
    hits: int = 0  # of those, loaded from it

    @property
    def compiled(self) -> int:
        return self.requests - self.hits

    def record(self) -> dict[str, object]:
        return {
            "persistent_cache": self.cache_dir,
            "programs_compiled": self.compiled,
            "programs_from_cache": self.hits,
        }


@contextlib.contextmanager
def tracking(cache: Path | None) -> Iterator[CompileStats]:
    """Counts cache-consulting compilations and cache hits inside the ``with`` block."""
    stats = CompileStats(cache_dir=str(cache) if cache else None)

    def listener(event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/compile_requests_use_cache":
            stats.requests += 1
        elif event == "/jax/compilation_cache/cache_hits":
            stats.hits += 1

    jax.monitoring.register_event_listener(listener)
    try:
        yield stats
    finally:
        jax.monitoring.unregister_event_listener(listener)


def compiler_options(spec: Any) -> dict[str, Any]:
    """Per-program XLA options: deterministic GPU reductions unless ``spec.deterministic`` is off,
    no autotuning where the plan says it does not pay (the CPU ignores both)."""
    options: dict[str, Any] = {}
    if spec.deterministic:
        options["xla_gpu_deterministic_ops"] = True
    if not spec.autotune:
        options["xla_gpu_autotune_level"] = 0
    return options


def with_precision(fn: Callable[..., Any], precision: str) -> Callable[..., Any]:
    """``fn`` traced under ``jax.default_matmul_precision(precision)``: the precision is part
    of the program, whatever the caller's context."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        with jax.default_matmul_precision(precision):
            return fn(*args)

    return wrapped


class CheapProgram:
    """A jitted run-once function (initialization: mostly threefry PRNG code) compiled at XLA
    backend optimization level 0, once per input shape: several-fold less compile time on the
    CPU, and its run time is negligible either way. Thread-safe; :meth:`prepare` compiles ahead
    of time (e.g. in a background thread) for abstract arguments."""

    def __init__(self, fn: Any, options: dict[str, Any]):
        self.fn, self.options = fn, options
        self.compiled: dict[Any, Any] = {}
        self.locks: dict[Any, threading.Lock] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _key(args: tuple) -> tuple:
        def sharding(a: Any) -> Any:
            s = getattr(a, "sharding", None)
            return None if s is None or isinstance(s, jax.sharding.SingleDeviceSharding) else s

        leaves, tree = jax.tree.flatten(args)
        return (tree, *((a.shape, a.dtype, sharding(a)) for a in leaves))

    def prepare(self, *args: Any) -> Any:
        """The executable for arguments shaped like ``args`` (arrays or ShapeDtypeStructs)."""
        key = self._key(args)
        with self.lock:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:  # a second caller waits for the first one's compilation
            if key not in self.compiled:
                lowered = self.fn.lower(*args)
                try:
                    options = {**self.options, "xla_backend_optimization_level": 0}
                    self.compiled[key] = lowered.compile(options)
                except Exception:  # a backend that rejects the option
                    self.compiled[key] = lowered.compile(self.options)
        return self.compiled[key]

    def __call__(self, *args: Any) -> Any:
        return self.prepare(*args)(*args)
