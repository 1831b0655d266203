"""Start-up time of the sweep's command line and of ``import jaxlr``, against ``import jax``.

Each case is a fresh ``python`` process, timed from start to exit on the wall clock
(``time.perf_counter`` around ``subprocess.run``), with the CPU seconds it used (user + system,
from ``getrusage(RUSAGE_CHILDREN)``: on a loaded machine the wall clock includes the time spent
waiting for a core, the CPU time does not); the cases are run round-robin (one run of
each case, ``--runs`` times, after one untimed round that warms the file cache), so that a change
in the machine's load reaches every case alike. Reported per case: min / median / max seconds.

With ``--before REV`` the same commands run a second time against the package as it was at git
revision ``REV`` (its ``jaxlr/`` extracted with ``git archive`` into a temporary directory, put
first on ``PYTHONPATH``), interleaved with the current code, so the two columns share the load.

Cases (targets from the start-up work on a 2-core machine, medians):

- ``--help``: ``python -m jaxlr.sweep --help`` (target <= 0.6 s; 2.2-2.5 s before)
- bad flag: ``python -m jaxlr.sweep --bogus``, refused by argparse (target <= 0.6 s; 2+ s before)
- config error: ``python -m jaxlr.sweep --widths 0,64``, refused by the config's checks
- ``import jaxlr`` (target: <= 0.3 s over ``import jax``)
- first use: ``from jaxlr import per_layer_lr`` (imports JAX, Optax and Flax)
- ``import jax``, and an empty ``python -c pass`` (the interpreter itself)

Usage::

    python benchmarks/startup.py                      # 7 runs per case: about a minute
    python benchmarks/startup.py --runs 9 --before 3b4c892 --out benchmarks/results/x.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    """One command to time."""

    name: str
    argv: tuple[str, ...]  # after ``python``
    code: int  # the exit status it must return
    target: str = ""  # the goal, in words
    previous: str = ""  # the figure quoted before the start-up work


CASES = (
    Case("--help", ("-m", "jaxlr.sweep", "--help"), 0, "<= 0.6 s", "2.2-2.5 s"),
    Case("bad flag", ("-m", "jaxlr.sweep", "--bogus"), 2, "<= 0.6 s", "2+ s"),
    Case("config error", ("-m", "jaxlr.sweep", "--widths", "0,64"), 2, "<= 0.6 s", "2+ s"),
    Case("import jaxlr", ("-c", "import jaxlr"), 0, "<= import jax + 0.3 s"),
    Case("first use", ("-c", "from jaxlr import per_layer_lr"), 0),
    Case("import jax", ("-c", "import jax"), 0),
    Case("python -c pass", ("-c", "pass"), 0),
)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Wall-clock seconds over the timed runs of one case."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        return cls(min(seconds), statistics.median(seconds), max(seconds))

    def __str__(self) -> str:
        return f"{self.min:.2f} / **{self.median:.2f}** / {self.max:.2f}"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_once(case: Case, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of one fresh process running ``case``; raises if it exits with
    another status than the case expects."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(
        [sys.executable, *case.argv], env=env, cwd=cwd, capture_output=True, text=True
    )
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if p.returncode != case.code:
        raise RuntimeError(f"{case.name}: exit {p.returncode}, expected {case.code}: {p.stderr}")
    return wall, cpu


def extract(rev: str, into: Path) -> Path:
    """``jaxlr/`` as of git revision ``rev``, written under ``into``; returns ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "jaxlr"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(runs: int, before: str | None) -> dict[str, dict[str, Stats]]:
    """``{"now" | "before": {case: Stats}}`` for wall and CPU seconds: keys ``"<case>"`` and
    ``"<case> cpu"``; ``"before"`` only with ``before``."""
    env = {**os.environ, "JAXLR_COMPILATION_CACHE": "0"}
    variants = {"now": (dict(env, PYTHONPATH=str(ROOT)), ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        if before:
            old = extract(before, Path(tmp))
            # cwd and PYTHONPATH both at the old tree: the checkout's jaxlr is not on the path
            variants["before"] = (dict(env, PYTHONPATH=str(old)), old)
        raw: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
        for r in range(runs + 1):  # round 0 warms the file cache and is not kept
            for case in CASES:
                for v, (venv, cwd) in variants.items():
                    wall, cpu = time_once(case, venv, cwd)
                    if r:
                        raw[v].setdefault(case.name, []).append(wall)
                        raw[v].setdefault(f"{case.name} cpu", []).append(cpu)
    return {v: {k: Stats.of(xs) for k, xs in d.items()} for v, d in raw.items()}


def table(stats: dict[str, dict[str, Stats]], before_rev: str | None) -> str:
    """The markdown table of the measurements, targets and previous figures."""
    now, before = stats["now"], stats.get("before", {})
    head = ["case", "command", "wall now: min / **median** / max (s)", "CPU now (median s)"]
    if before:
        head += [f"wall at {before_rev} (s)", f"CPU at {before_rev} (median s)"]
    head += ["target", "quoted before"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in CASES:
        cells = [c.name, "`python " + " ".join(c.argv) + "`"]
        cells += [str(now[c.name]), f"{now[c.name + ' cpu'].median:.2f}"]
        if before:
            cells += [str(before[c.name]), f"{before[c.name + ' cpu'].median:.2f}"]
        cells += [c.target, c.previous]
        rows.append("| " + " | ".join(cells) + " |")

    def over(case: str, suffix: str = "") -> str:
        return f"{now[case + suffix].median - now['import jax' + suffix].median:+.2f} s"

    rows += [
        "",
        f"Over `import jax` (medians, wall / CPU): `import jaxlr` {over('import jaxlr')} / "
        f"{over('import jaxlr', ' cpu')}; first use {over('first use')} / "
        f"{over('first use', ' cpu')}.",
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Times the cases, prints the table, and writes it to ``--out`` if given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs per case (default 7)")
    p.add_argument("--before", metavar="REV", help="also time the package at git revision REV")
    p.add_argument("--out", type=Path, help="write the report (markdown) to this file")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    stats = measure(args.runs, args.before)
    load1 = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Start-up time (cpu)",
        "",
        table(stats, args.before),
        "",
        f"{args.runs} timed runs per case, round-robin"
        f"{' with the old code' if args.before else ''}, "
        f"after one untimed round; {time.perf_counter() - t0:.0f} s in all. "
        f"Machine: {os.cpu_count()} cores, load average {load0[0]:.1f} at the start and "
        f"{load1[0]:.1f} at the end; Python {platform.python_version()}; HEAD {commit}.",
        f"Command: `python benchmarks/startup.py {' '.join(argv or sys.argv[1:])}`".rstrip() + ".",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
