"""What the command-line programs ``python -m jaxlr.coord_check`` and ``python -m torch_parity``
share: a Ctrl-C that always ends the process with status 130 and one line, and flags that may be
given only once. Nothing here imports JAX, torch or numpy, so ``--help`` and flag errors stay fast.

Why a Ctrl-C ends the process at once, from the signal handler, instead of raising
``KeyboardInterrupt``: the exception does not reliably reach the program's ``except``. Raised
inside a garbage-collector or weakref callback (JAX runs one on every collection), it is printed
as "Exception ignored in ..." and dropped, and the program runs on to exit 0; and when it does
propagate, the interpreter's shutdown with torch's and XLA's worker threads still running crashed
(SIGSEGV, exit 139) in about half of the tries. :class:`CtrlC` writes its message with
``os.write`` (safe inside a handler), flushes what the program printed, and calls
``os._exit(130)``: no finalizers, no thread joins, the same status every time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program stopped by Ctrl-C


class CtrlC:
    """A SIGINT handler that prints ``message`` (one line, stderr) and exits 130 at once.

    Install it only when running as the program (never inside a library call or a test run),
    as early as possible: from then on every Ctrl-C, during imports or mid-run, ends the process.
    Inside :meth:`deferred` a Ctrl-C is held until the block ends, so a file being written is
    completed (or not started) rather than cut.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        self._depth = 0  # open deferred() blocks
        self._pending = False  # a Ctrl-C arrived inside a deferred() block

    def install(self) -> CtrlC:
        """Makes this the process's SIGINT handler, unless SIGINT is ignored (a job started in
        the background by a shell, or under ``nohup``: a Ctrl-C at the terminal is not for it,
        and Python leaves it ignored too); returns ``self``."""
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = True
        else:
            self.exit()

    def exit(self) -> None:
        """Writes the message, flushes stdout and stderr, ends the process with status 130."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # e.g. a handler run inside a write to it
                stream.flush()
        with contextlib.suppress(OSError):
            os.write(2, (self.message.rstrip("\n") + "\n").encode())
        os._exit(INTERRUPTED)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Holds a Ctrl-C that arrives inside the block until the block ends, then exits."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._pending and not self._depth:
                self.exit()


class Once(argparse.Action):
    """Stores a flag's value and refuses the flag given twice (``--widths 16 --widths 64``):
    which of the two was meant is a guess, so neither is taken."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option} given twice; give it once (a list takes commas)")
        setattr(namespace, self.dest, values)
