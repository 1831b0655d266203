"""Compilation: JAX's persistent compilation cache, and counting what was compiled.

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
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

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
