"""The documentation runs: every code block of ``README.md`` and ``docs/`` (and of the READMEs the
docs include) is executed here or checked, so that none goes stale.

A page's blocks run in order, in one temporary directory and one Python namespace:

* ``python`` blocks are executed in this process;
* ``bash`` blocks are run command by command: ``python -m jaxlr.sweep``, ``python -m
  torch_parity`` and ``python -m jaxlr.coord_check`` in this process (through their ``main``),
  any other command in a shell; each must exit 0;
* ``text`` blocks are samples of output and must say which run they come from.

An HTML comment on the line before a block's fence changes what happens to it (the markers are
documented on the docs' Development page):

* ``<!-- docs-test: skip: REASON -->``: not run, for the REASON given (a GPU, a cluster, an
  install, an hour). Its commands are still checked: the sweep's, parity's and the coordinate
  check's flags are parsed and the sweep's config validated, scripts must exist and accept their
  flags (``--help``), and the tool must be one this project uses;
* ``<!-- docs-test: slow -->``: the page runs in the ``slow`` test (long end-to-end sweeps);
* ``<!-- docs-test: exit N -->``: the block's last command must exit with status N;
* ``<!-- docs-test: sample-output: NAME -->`` (``text`` blocks): the sample is compared with a
  real run, :data:`SAMPLE_CHECKS` ``[NAME]``.

Blocks of the READMEs that the docs include (``<!-- include: experiments/README.md -->``) have
no markers of their own: they are treated as ``skip`` (experiment and benchmark runs take
minutes), so their commands are checked but not run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w-]*)[ \t]*$")
MARKER = re.compile(
    r"^[ \t]*<!-- docs-test: (?P<kind>[a-z-]+)(?:(?::[ \t]*|[ \t]+)(?P<arg>.*?))?[ \t]*-->$"
)
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->[ \t]*$", re.MULTILINE)
KINDS = {"skip", "slow", "exit", "sample-output"}
RUN_LANGS = {"python", "bash"}
TOOLS = {"ls", "cat", "head"}  # other programs a block may run (none changes anything)
MODULE_TOOLS = {"pytest", "venv", "pip"}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code and its markers."""

    path: Path
    line: int
    lang: str
    code: str
    markers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path, *, included: bool = False) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the markers on the lines before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        markers, j = {}, i - 1
        while j >= 0 and (mk := MARKER.match(lines[j])):
            markers[mk.group("kind")] = mk.group("arg") or ""
            j -= 1
        if included and not markers:
            markers = {"skip": "an experiment or benchmark run (minutes) in an included README"}
        indent, fence, start = m.group("indent"), m.group("fence"), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        found.append(Block(path, start + 1, m.group("lang"), "\n".join(body) + "\n", markers))
        i += 1
    return found


def doc_pages() -> list[Path]:
    """README.md and every Markdown page of docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def page_blocks(page: Path) -> list[Block]:
    """A page's own blocks, then those of the READMEs it includes."""
    blocks = blocks_of(page)
    for m in INCLUDE.finditer(page.read_text(encoding="utf-8")):
        if m.group("path") != "README.md":  # docs/index.md shows README.md, tested on its own
            blocks += blocks_of(ROOT / m.group("path"), included=True)
    return blocks


def _is_slow(page: Path) -> bool:
    return any("slow" in b.markers for b in page_blocks(page))


# ------------------------------------------------------------------------ shell commands
def commands(code: str) -> list[list[str]]:
    """The commands of a shell block as argv lists: continuations joined, comments, ``&&``,
    ``;`` and ``|`` split, ``VAR=value`` prefixes and ``srun`` dropped, ``$VAR`` set to 0."""
    text = code.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w in ("&&", ";", "|", "||"):
                while cmd and (re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]) or cmd[0] == "srun"):
                    cmd.pop(0)
                if cmd:
                    out.append([re.sub(r"\$\{?[A-Za-z_]\w*\}?", "0", c) for c in cmd])
                cmd = []
            else:
                cmd.append(os.path.expanduser(w))
    return out


def kind_of(argv: list[str]) -> tuple[str, list[str]]:
    """``(kind, args)``: ``sweep``, ``parity``, ``coord``, ``script`` (args[0] is the file) or
    ``tool`` (any other program: runs only if it is one of :data:`TOOLS`)."""
    exe, rest = (Path(argv[0]).name or argv[0]), argv[1:]
    if exe == "jaxlr-sweep":
        return "sweep", rest
    if exe == "jaxlr-coord-check":
        return "coord", rest
    if exe in ("python", "python3") and rest[:1] == ["-m"]:
        module, args = rest[1], rest[2:]
        kinds = {"jaxlr.sweep": "sweep", "torch_parity": "parity", "jaxlr.coord_check": "coord"}
        if module in kinds:
            return kinds[module], args
        assert module in MODULE_TOOLS, f"unknown module in the docs: python -m {module}"
        return "tool", rest
    if exe in ("python", "python3", "bash") and rest and rest[0].endswith((".py", ".sh")):
        return "script", rest
    return "tool", argv


def _parse_sweep(args: list[str]) -> None:
    """The sweep's flags parsed and its config validated, as the CLI does before training."""
    from jaxlr.cli import build_parser, config_from_args

    if args[:1] == ["merge"]:
        return
    ns = build_parser().parse_args(args)
    if not ns.resume:
        config_from_args(ns)


def check_command(argv: list[str]) -> None:
    """A command that is not run: its flags are checked (a script's in
    :func:`test_scripts_accept_their_flags`)."""
    kind, args = kind_of(argv)
    if kind == "sweep":
        _parse_sweep(args)
    elif kind == "parity":
        from torch_parity.__main__ import parse_args

        parse_args(args)
    elif kind == "coord":
        from jaxlr.coord_check.__main__ import build_parser

        build_parser().parse_args(args)
    elif kind == "script":
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"


def _status(run: Callable[[], object]) -> int:
    try:
        code = run()
    except SystemExit as e:  # argparse: --help
        code = e.code
    return code if isinstance(code, int) else int(code is not None)


def run_command(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Runs one command of a block in ``cwd``; returns its exit status and what it printed."""
    kind, args = kind_of(argv)
    if kind == "sweep":
        from jaxlr.cli import main as entry
    elif kind == "parity":
        from torch_parity.__main__ import main as entry
    elif kind == "coord":
        from jaxlr.coord_check.__main__ import main as entry
    else:
        assert kind == "script" or argv[0] in TOOLS, f"{' '.join(argv)}: mark the block skip"
        if kind == "script":
            argv = [sys.executable if argv[0].startswith("python") else argv[0], *args]
            argv[1] = str(ROOT / args[0])
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        return p.returncode, p.stdout + p.stderr
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = _status(lambda: entry(args))
    return code, out.getvalue()


# ------------------------------------------------------------------------ sample outputs
def _mask(line: str) -> str:
    """A line with its numbers (and ``a-b`` architectures, run directories) replaced by ``#``."""
    line = re.sub(r"runs/[\w./-]+/", "DIR/", line)
    line = re.sub(r"[−-]?\d+(\.\d+)?(e[−+-]?\d+)?(-\d+)*", "#", line)
    return " ".join(line.split())


def check_sweep_report(sample: str, cwd: Path) -> None:
    """The sample of the sweep's report has the lines a real sweep prints (numbers aside), and
    the same list of files written."""
    out_dir = cwd / "runs" / "sample"
    code, out = run_command(
        ["python", "-m", "jaxlr.sweep", "--widths", "8,16,32", "--lrs", "0.5,0.1", "--seeds", "2",
         "--epochs", "1", "--no-progress", "--out", str(out_dir)],
        cwd,
    )  # fmt: skip
    assert code == 0, out
    real = [_mask(line) for line in out.splitlines()]
    lines = [line for line in sample.splitlines() if line.strip() and not line.startswith("$")]
    for line in lines:
        if re.match(r"^\s*\d+(-\d+)* ", line):  # a row of the table
            continue
        if line.startswith("wrote "):
            (wrote,) = [r for r in out.splitlines() if r.startswith("wrote ")]
            assert sorted(line.split(": ")[1].split()) == sorted(wrote.split(": ")[1].split())
            continue
        head = _mask(line).split(";")[0].rstrip(")")  # what follows a ";" depends on the run
        assert any(r.startswith(head) for r in real), f"{line!r} is not in the output:\n{out}"


@functools.cache
def _parity_narrow(cwd: Path) -> tuple[int, str]:
    return run_command(["python", "-m", "torch_parity", "--example", "narrow"], cwd)


def check_parity_table(sample: str, cwd: Path) -> None:
    """The sample of torch_parity's table has its real header and one row per example."""
    from torch_parity.compare import EXAMPLE_NAMES

    code, out = _parity_narrow(cwd)
    assert code == 0, out
    header = [line for line in out.splitlines() if line.startswith("example")]
    assert header and header[0].split() == sample.splitlines()[0].split(), out
    width = len(sample.splitlines()[0].split(" | "))
    rows = {line.split()[0] for line in sample.splitlines()[2:] if len(line.split(" | ")) == width}
    assert rows == set(EXAMPLE_NAMES)


SAMPLE_CHECKS: dict[str, Callable[[str, Path], None]] = {
    "sweep-report": check_sweep_report,
    "parity-table": check_parity_table,
}


# ------------------------------------------------------------------------ running a page
@contextlib.contextmanager
def _in(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_page(page: Path, tmp_path: Path) -> None:
    """Runs (or checks) every block of ``page`` in order, in ``tmp_path``."""
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    namespace = module.__dict__
    with _in(tmp_path):
        for block in page_blocks(page):
            unknown = block.markers.keys() - KINDS
            assert not unknown, f"{block.where}: unknown marker {unknown}"
            if "skip" in block.markers:
                assert block.markers["skip"].strip(), f"{block.where}: a skip needs a reason"
                if block.lang == "bash":
                    for argv in commands(block.code):
                        check_command(argv)
                continue
            if block.lang == "python":
                exec(compile(block.code, block.where, "exec"), namespace)
            elif block.lang == "bash":
                cmds = commands(block.code)
                assert cmds, f"{block.where}: no command"
                want = [0] * len(cmds)
                want[-1] = int(block.markers.get("exit") or 0)
                for argv, status in zip(cmds, want, strict=True):
                    code, out = run_command(argv, tmp_path)
                    assert code == status, f"{block.where}: {' '.join(argv)} -> {code}\n{out}"
                    if status == 2:  # bad input: one line, no traceback
                        assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
            else:
                name = block.markers.get("sample-output")
                assert name in SAMPLE_CHECKS, (
                    f"{block.where}: a {block.lang or 'plain'} block needs "
                    "<!-- docs-test: sample-output: NAME --> or <!-- docs-test: skip: REASON -->"
                )
                SAMPLE_CHECKS[name](block.code, tmp_path)
    sys.modules.pop(module.__name__, None)


def script_flags() -> dict[str, set[str]]:
    """``{script: the flags the docs give it}`` over the blocks that are not run."""
    scripts: dict[str, set[str]] = {}
    for page in doc_pages():
        for block in page_blocks(page):
            if "skip" in block.markers and block.lang == "bash":
                for argv in commands(block.code):
                    kind, args = kind_of(argv)
                    if kind == "script" and args[0].endswith(".py"):
                        flags = {a.split("=")[0] for a in args[1:] if a.startswith("--")}
                        scripts.setdefault(args[0], set()).update(flags)
    return scripts


FAST = [p for p in doc_pages() if not _is_slow(p)]
SLOW = [p for p in doc_pages() if _is_slow(p)]


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.fixture
def docs_env(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python -m jaxlr.sweep"])
    monkeypatch.setenv("JAXLR_COMPILATION_CACHE", "0")


OPTIONAL = {"torch", "haiku", "equinox", "mup", "tensorflow_datasets"}  # extras, not requirements


def _run_or_skip(page: Path, tmp_path: Path) -> None:
    """:func:`run_page`, skipped when a page needs an optional package that is not installed."""
    try:
        run_page(page, tmp_path)
    except ModuleNotFoundError as e:
        if e.name not in OPTIONAL:
            raise
        pytest.skip(f"{_id(page)} needs {e.name} (pip install -e '.[dev,parity]')")


@pytest.mark.parametrize("page", FAST, ids=_id)
def test_page_runs(page: Path, tmp_path: Path, docs_env) -> None:
    _run_or_skip(page, tmp_path)


RUN_BOUND = {"your-model.md"}
"""Pages whose time goes into running their programs (the user model's convolutions), compiled
at XLA's default optimization level (the ``optimized_cpu_code`` fixture of conftest.py)."""


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW, ids=_id)
def test_slow_page_runs(page: Path, tmp_path: Path, docs_env, request) -> None:
    if page.name in RUN_BOUND:
        request.getfixturevalue("optimized_cpu_code")
    _run_or_skip(page, tmp_path)


# ------------------------------------------------------------------------ the pages themselves
def test_every_block_is_accounted_for() -> None:
    """Every block runs (python, bash), is a checked sample, or says why it is skipped; every
    marker is well formed, of a known kind, and stands right before a fence (or another
    marker)."""
    for page in doc_pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "docs-test:" not in line or line.lstrip().startswith("|"):  # a table row
                continue
            where = f"{_id(page)}:{i + 1}"
            m = MARKER.match(line)
            assert m and m.group("kind") in KINDS, f"{where}: malformed marker {line!r}"
            after = lines[i + 1] if i + 1 < len(lines) else ""
            assert FENCE.match(after) or MARKER.match(after), f"{where}: no fence after it"
        for block in page_blocks(page):
            if "skip" in block.markers:
                assert block.markers["skip"].strip(), f"{block.where}: a skip needs a reason"
            elif block.lang not in RUN_LANGS:
                assert block.markers.get("sample-output") in SAMPLE_CHECKS, block.where


def test_readme_is_short() -> None:
    """README.md: at most 150 lines and 10 kB, with the headline table between its markers."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert len(text.encode()) <= 10_000
    assert text.count("<!-- headline:start -->") == 1 == text.count("<!-- headline:end -->")
    head = text.split("<!-- headline:start -->")[1].split("<!-- headline:end -->")[0]
    assert "| **Adam**" in head and "| **SGD**" in head and "|---|" in head


def test_no_internal_names() -> None:
    """No "seed 000/001/002" or issue numbers in what readers see."""
    pattern = re.compile(r"seed[ -]?00\d|issue[ #]*\d", re.IGNORECASE)
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        assert not pattern.search(text), f"{_id(page)}: {pattern.search(text).group(0)!r}"


def test_api_reference_lists_the_public_names() -> None:
    """docs/api.md renders every name of ``jaxlr.__all__`` (and the sweep's) from its module."""
    import jaxlr
    import jaxlr.sweep

    api = (DOCS / "api.md").read_text(encoding="utf-8")
    for module in (jaxlr, jaxlr.sweep):
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", None) or module.__name__
            assert f"::: {home}.{name}" in api or f"::: {module.__name__}.{name}" in api, name


def test_output_columns_match_the_code() -> None:
    """The columns The sweep page lists are the tables' columns, in order."""
    from jaxlr import exponent, results, stats

    text = " ".join((DOCS / "sweep.md").read_text(encoding="utf-8").split())
    for columns in (
        results.COLUMNS,
        exponent.COLUMNS,
        exponent.DEPTH_COLUMNS,
        stats.TRANSFER_COLUMNS,
        list(results.RATE_STATS),
    ):
        assert f"`{', '.join(columns)}`" in text, columns


def test_development_page_names_what_exists() -> None:
    """The Development page's module table lists every module of ``jaxlr/``, every file it names
    exists, and each "`file`'s `name`" is defined in that file."""
    text = (DOCS / "development.md").read_text(encoding="utf-8")
    named = set(
        re.findall(r"`((?:jaxlr|tests|torch_parity|benchmarks|experiments)/[\w/]*\.py)`", text)
    )
    assert named, "the page names no file"
    for path in named:
        assert (ROOT / path).is_file(), f"development.md names {path}, which does not exist"
    for module in sorted((ROOT / "jaxlr").glob("*.py")):
        assert f"| `jaxlr/{module.name}` |" in text, f"the module table lacks jaxlr/{module.name}"
    for path, name in re.findall(r"`(jaxlr/\w+\.py)`'s `(\w+)`", text):
        source = (ROOT / path).read_text(encoding="utf-8")
        defined = rf"^\s*(def|class) {name}\b|^{name}\s*[:=]"
        assert re.search(defined, source, re.MULTILINE), f"{path} defines no {name}"


@pytest.mark.slow
def test_scripts_accept_their_flags(tmp_path: Path) -> None:
    """Each script the docs name (and do not run) accepts the docs' flags: a flag that is not a
    literal in its source must be in its ``--help`` (flags generated from the config's fields)."""
    flags = script_flags()
    assert flags, "no script found: the check would check nothing"
    # a flag written as a literal in the script or its folder's shared module needs no --help
    for script in list(flags):
        sources = [ROOT / script, (ROOT / script).with_name("common.py")]
        text = "".join(p.read_text(encoding="utf-8") for p in sources if p.is_file())
        flags[script] = {f for f in flags[script] if f'"{f}"' not in text}
        if not flags[script]:
            del flags[script]
    helps = {
        script: subprocess.Popen(
            [sys.executable, str(ROOT / script), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for script in sorted(flags)
    }
    for script, proc in helps.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script} --help: {err}"
        missing = {f for f in flags[script] if f not in out}
        assert not missing, f"{script} has no flag {missing}"


@pytest.mark.slow
def test_site_builds_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: no broken link, no missing page, no docstring warning."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "s" / "experiments" / "index.html").is_file()
