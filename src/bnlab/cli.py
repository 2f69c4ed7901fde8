"""The ``bnlab`` command line.

Each sub-command lives in a module listed in COMMANDS; the module exposes
``add_arguments(parser)`` and ``main(args) -> int`` (or, for "module:x", ``add_x_arguments`` and
``x_main``, so one module can hold related commands). Adding a command is one line here.

What every command shares: the user's mistakes and unusable files (a damaged store, a malformed
data file, a read-only folder, a missing lab dependency, an unreachable scheduler) end in one line
``bnlab COMMAND: what was expected and what was found`` and exit status 2 (``BNLAB_TRACEBACK=1``
shows the traceback instead); Ctrl-C ends with status 130 and SIGTERM with 143, after the
command has stopped whatever it started (a sweep's worker processes included); messages of
the library (``logging.getLogger("bnlab")``: claims taken over, runs that failed) go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from .extras import missing_lab_module

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("bnlab.check", "check bnlab's layers against torch.nn on this machine and print a table"),
    "list": ("bnlab.experiments.cli:list", "list the experiments: claim id, name, question"),
    "run": ("bnlab.experiments.cli:run", "run one experiment (reusing stored runs) and print its verdict"),
    "report": ("bnlab.report.cli", "run the experiments and write the report: index.html, results.json, CSVs"),
    "doctor": ("bnlab.surgery.doctor_cli", "find batch-norm hazards in a model (module:factory or a TorchScript file)"),
    "bench": ("bnlab.bench.command", "time bnlab's batch norm against torch.nn's on this machine"),
    "train": (
        "bnlab.train.command",
        "train one configuration (data, model, norm, optimizer, seed) and print its result",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bnlab", description="Batch normalization, implemented and put to the test.")
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_target=target)
        try:
            add_arguments, _ = _entry_points(target)
        except ImportError as e:  # a lab command without the lab extra: say so when it is run
            if missing_lab_module(e) is None:
                raise
            p.set_defaults(_missing=e)
            continue
        add_arguments(p)
    return parser


def _entry_points(target: str):
    """'pkg.module' -> (add_arguments, main); 'pkg.module:x' -> (add_x_arguments, x_main)."""
    module_name, _, prefix = target.partition(":")
    module = importlib.import_module(module_name)
    if prefix:
        return getattr(module, f"add_{prefix}_arguments"), getattr(module, f"{prefix}_main")
    return module.add_arguments, module.main


class _Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that cleanup (finally blocks, cluster shutdown) runs."""


@contextlib.contextmanager
def _sigterm_as_exit():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _messages_to_stderr():
    """The library's ``bnlab`` logger, one plain line per message, while a command runs."""
    logger = logging.getLogger("bnlab")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bnlab: %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _one_line(error: BaseException) -> str | None:
    """The one-line message for an error that is the user's to fix, or None for a bug."""
    from .train.store import StoreError

    lab = missing_lab_module(error)
    if lab is not None:
        return lab
    if isinstance(error, (StoreError, ValueError, OSError)):
        return " ".join(str(error).split()) or type(error).__name__
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # a command without its lab extra knows no options
    if unknown and getattr(args, "_missing", None) is None:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    name = f"bnlab {args.command}"
    with _sigterm_as_exit(), _messages_to_stderr():
        try:
            if getattr(args, "_missing", None) is not None:
                raise args._missing
            _, command_main = _entry_points(args._target)
            return int(command_main(args) or 0)
        except KeyboardInterrupt:
            print(f"\n{name}: interrupted", file=sys.stderr)
            return 130
        except _Terminated as e:
            print(f"{name}: terminated (SIGTERM)", file=sys.stderr)
            return int(e.code)  # type: ignore[arg-type]  # _Terminated carries 128 + the signal number
        except Exception as e:
            message = _one_line(e)
            if message is None or os.environ.get("BNLAB_TRACEBACK"):
                raise
            print(f"{name}: {message}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
