"""The coordinate check's command line: comma lists like the sweep's, one-line exit-2 errors for
bad flags and a bad --out (before JAX is imported), and Ctrl-C at any moment: exit 130, one line.

Flag errors run in this process (``main(argv)``); a subprocess only where the process is the
point (what it imported, a signal). :func:`interrupt_at` and its moments are shared with
test_parity_cli.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from jaxlr.coord_check.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
COORD_INTERRUPTED = "python -m jaxlr.coord_check: interrupted (Ctrl-C); nothing written"


# ------------------------------------------------------------------------ signals
def loaded(pid: int, library: str) -> bool:
    """Whether process ``pid`` has mapped a shared library whose path contains ``library``."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Inside the block SIGINT is not ignored in this process, so that children started there
    do not inherit an ignored SIGINT (no ``preexec_fn``: forking a process that runs JAX's
    threads may deadlock)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_at(
    argv: Sequence[str],
    moment: Callable[[subprocess.Popen, list[str]], bool],
    *,
    timeout: float = 240.0,
) -> tuple[int, str, str]:
    """Starts ``python *argv``, sends SIGINT once ``moment(proc, stderr_lines_so_far)`` holds
    (polled every 10 ms), and returns ``(returncode, stdout, stderr)``.

    A shell or CI runner may start the tests with SIGINT ignored, which the child would inherit
    (and then rightly ignore the signal): the child is started with SIGINT not ignored.
    """
    with sigint_not_ignored():
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    err = b""
    deadline = time.monotonic() + timeout
    try:
        while not moment(proc, err.decode(errors="replace").splitlines()):
            assert proc.poll() is None, f"exited {proc.returncode} before the moment: {err!r}"
            assert time.monotonic() < deadline, "the moment never came"
            with contextlib.suppress(BlockingIOError):
                err += os.read(fd, 1 << 16)
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        os.set_blocking(fd, True)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), (err + rest).decode()


def on_load(library: str, then: float = 0.0) -> Callable[[subprocess.Popen, list[str]], bool]:
    """The moment the child has mapped ``library`` (plus ``then`` seconds)."""
    seen: list[float] = []

    def moment(proc: subprocess.Popen, err: list[str]) -> bool:
        if not seen and loaded(proc.pid, library):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() >= seen[0] + then

    return moment


def assert_interrupted(result: tuple[int, str, str], message: str) -> None:
    """Exit 130, nothing on stdout, and the one-line message as the last line of stderr."""
    code, out, err = result
    assert code == 130, (code, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines()[-1] == message, err
    assert out == ""


@pytest.mark.slow
def test_ctrl_c_at_any_moment_exits_130(tmp_path):
    """During the numpy and JAX imports, while compiling and training: 130 each time
    (the previous entry point printed a traceback, or let the interrupt be swallowed by JAX's
    garbage-collector callback and exited 0)."""
    argv = ["-m", "jaxlr.coord_check", "--out", str(tmp_path), "--widths", "64,128,256,512"]
    moments = [on_load("numpy/_core"), on_load("jaxlib/"), on_load("pandas/_libs")]
    moments += [on_load("jaxlib/", then=t) for t in (1.5, 4.0)]
    for moment in moments:
        assert_interrupted(interrupt_at(argv, moment), COORD_INTERRUPTED)
        assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_ctrl_c_inside_a_deferred_block_waits_for_its_end(tmp_path):
    """CtrlC.deferred(): a SIGINT inside the block is held; the block completes, then exit 130."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        from jaxlr.entry import CtrlC
        ctrl_c = CtrlC("held: interrupted").install()
        with ctrl_c.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the Python-level handler runs between bytecodes
                pass
            print("block finished", flush=True)
        print("after the block")
        """
    )
    with sigint_not_ignored():
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout == "block finished\n"
    assert proc.stderr == "held: interrupted\n"


def test_an_ignored_sigint_stays_ignored():
    """A program started with SIGINT ignored (a background job) keeps ignoring it."""
    from jaxlr.entry import CtrlC

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        CtrlC("not installed").install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------ start-up
def test_help_and_flag_errors_import_no_jax():
    """--help, a malformed list and a bad --out return without importing JAX, Optax or pandas."""
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from jaxlr.coord_check.__main__ import main
        codes = []
        for argv in (["--help"], ["--out", "/proc/x"], ["--out", "o", "--widths", "64,,128"],
                     ["--out", "o", "--head-dim", "8"], ["--out", "o", "--model", "gpt",
                     "--widths", "32,40"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    codes.append(main(argv))
                except SystemExit as e:
                    codes.append(e.code)
        heavy = sorted(m for m in ("jax", "optax", "pandas", "torch") if m in sys.modules)
        print(codes, heavy)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.stdout.strip() == "[0, 2, 2, 2, 2] []", proc.stdout + proc.stderr


# ------------------------------------------------------------------------ flags
def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Runs ``main(argv)``, which must exit 2 (returned or raised) with one line on stderr."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("python -m jaxlr.coord_check: error: "), err
    assert captured.out == ""
    return err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--widths", "64,,128"], "empty item"),
        (["--widths", "64,128,"], "empty item"),
        (["--seeds", "0,,1"], "empty item"),
        (["--widths", "64,128", "--widths", "256,512"], "--widths given twice"),
        (["--seeds", "0", "--seeds", "1"], "--seeds given twice"),
        (["--steps", "3", "--steps", "4"], "--steps given twice"),
        (["--widths", "64", "128"], "--widths takes one comma list: --widths 64,128"),
        (["--seeds", "0", "1", "2"], "--seeds takes one comma list: --seeds 0,1,2"),
        (["--widths", "64,x"], "expected an integer, got 'x'"),
        (["--widths", "256,64"], "increasing"),
        (["--seeds", "0,0"], "without repeats"),
        (["--adam-lr", "nan"], "finite and > 0"),
        (["--head-dim", "8"], "--head-dim applies to --model gpt only; drop it or add --model gpt"),
        (["--context", "8"], "--context applies to --model gpt only"),
        (["--data-dir", "corpus.txt"], "--data-dir applies to --model gpt only"),
        (
            ["--optimizer", "adam", "--sgd-lr", "1"],
            "--sgd-lr applies only when --optimizer "
            "includes sgd (it is adam); drop --sgd-lr or add sgd to --optimizer",
        ),
        (["--model", "gpt", "--optimizer", "sgd", "--adam-lr", "1"], "--adam-lr applies only"),
        (
            ["--model", "gpt", "--widths", "32,40"],
            "width 40: not a multiple of the head size 16",
        ),
        (
            ["--model", "gpt", "--head-dim", "64"],
            "width 32, base width 32: not a multiple of the head size 64; choose multiples of 64",
        ),
        (["--model", "gpt", "--context", "0"], "context=0: each must be >= 1"),
        (["--model", "transformer"], "invalid choice: 'transformer'"),
        (["--model", "gpt", "--model", "mlp"], "--model given twice"),
        (["--optimizer", "lion"], "unknown 'lion'; choose from adam,sgd"),
        (["--optimizer", "adam", "sgd"], "--optimizer takes one comma list: --optimizer adam,sgd"),
        (["--parametrizations", "sp,,mup"], "empty item"),
        (["--parametrizations", "sp,sp"], "parametrizations sp,sp: choose one or more of sp,mup"),
    ],
)
def test_list_and_value_errors_are_one_line_exit_2(tmp_path, capsys, flags, expected):
    out = tmp_path / "out"
    err = _one_line_error(capsys, ["--out", str(out), *flags])
    assert expected in err
    assert not out.exists()  # refused before anything was made


def test_comma_lists_parse_like_the_sweeps():
    from jaxlr.cli import parse_ints
    from jaxlr.coord_check.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(["--out", "o", "--widths", "64, 128,256", "--seeds", "3,1"])
    cfg = config_from_args(args)
    assert cfg.widths == (64, 128, 256) == parse_ints("64, 128,256")
    assert cfg.seeds == (3, 1)
    assert config_from_args(build_parser().parse_args(["--out", "o"])).widths == (
        64, 128, 256, 512, 1024
    )  # fmt: skip


def test_model_gpt_builds_the_gpt_config():
    from jaxlr.coord_check.__main__ import build_parser, config_from_args
    from jaxlr.coord_check.config import CoordCheckConfig, GPTCoordCheckConfig

    argv = "--out o --model gpt --optimizer sgd --parametrizations mup --sgd-lr 0.5 --head-dim 8"
    cfg = config_from_args(build_parser().parse_args(argv.split()))
    assert cfg == GPTCoordCheckConfig(
        optimizers=("sgd",), parametrizations=("mup",), sgd_lr=0.5, head_dim=8
    )
    argv = "--out o --optimizer adam --parametrizations sp,mup"
    assert config_from_args(build_parser().parse_args(argv.split())) == CoordCheckConfig(
        optimizers=("adam",)
    )


def test_gpt_data_problems_are_one_line_exit_2(tmp_path, capsys):
    """A --data-dir that does not exist, or a corpus too short for --context: one line, exit 2,
    nothing written."""
    missing = tmp_path / "no-such-corpus"
    out = tmp_path / "out"
    base = ["--out", str(out), "--model", "gpt", "--widths", "16,32", "--head-dim", "16"]
    err = _one_line_error(capsys, [*base, "--data-dir", str(missing)])
    assert f"{missing} does not exist" in err
    short = tmp_path / "short.txt"
    short.write_text("a short corpus of some forty-odd bytes\n")
    err = _one_line_error(capsys, [*base, "--data-dir", str(short), "--context", "32"])
    assert "context 32 is too long" in err
    assert list(out.iterdir()) == []


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    a_file = tmp_path / "results.csv"
    a_file.write_text("not a directory\n")
    err = _one_line_error(capsys, ["--out", str(a_file), "--widths", "64,128"])
    assert f"--out {a_file} is a file" in err
    assert a_file.read_text() == "not a directory\n"
    err = _one_line_error(capsys, ["--out", str(a_file / "sub")])
    assert "cannot create or write" in err


@pytest.mark.parametrize("out", ["/proc/x", "/proc/x/y"])
def test_out_that_cannot_be_made_is_one_line_exit_2(capsys, out):
    err = _one_line_error(capsys, ["--out", out])
    assert f"--out {out}: cannot create or write this directory" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_out_that_is_not_writable_is_one_line_exit_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    err = _one_line_error(capsys, ["--out", str(locked)])
    assert "cannot create or write" in err


def test_batch_larger_than_the_data_is_one_line_exit_2(tmp_path, capsys):
    err = _one_line_error(capsys, ["--out", str(tmp_path), "--widths", "8,16", "--batch", "99999"])
    assert "digits has" in err
    assert list(tmp_path.iterdir()) == []
