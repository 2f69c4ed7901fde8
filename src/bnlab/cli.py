"""The ``bnlab`` command line.

Each sub-command lives in a module listed in COMMANDS; the module exposes
``add_arguments(parser)`` and ``main(args) -> int`` (or, for "module:x", ``add_x_arguments`` and
``x_main``, so one module can hold related commands). Adding a command is one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("bnlab.check", "check bnlab's layers against torch.nn on this machine and print a table"),
    "list": ("bnlab.experiments.cli:list", "list the experiments: claim id, name, question"),
    "run": ("bnlab.experiments.cli:run", "run one experiment (reusing stored runs) and print its verdict"),
    "report": ("bnlab.report.cli", "run the experiments and write the report: index.html, results.json, CSVs"),
    "doctor": ("bnlab.surgery.doctor_cli", "find batch-norm hazards in a model (module:factory or a TorchScript file)"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="bnlab", description="Batch normalization, implemented and put to the test.")
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_target=target)
        add_arguments, _ = _entry_points(target)
        add_arguments(p)
    return parser


def _entry_points(target: str):
    """'pkg.module' -> (add_arguments, main); 'pkg.module:x' -> (add_x_arguments, x_main)."""
    module_name, _, prefix = target.partition(":")
    module = importlib.import_module(module_name)
    if prefix:
        return getattr(module, f"add_{prefix}_arguments"), getattr(module, f"{prefix}_main")
    return module.add_arguments, module.main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _, command_main = _entry_points(args._target)
    return int(command_main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
