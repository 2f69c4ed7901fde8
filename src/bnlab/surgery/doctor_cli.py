"""``bnlab doctor``: run :func:`bnlab.surgery.doctor.doctor` on a model from the command line.

The model is ``module:factory`` (imported; ``factory`` is called without arguments if it is not
already a module; dots in ``factory`` walk attributes) or the path of a TorchScript file
(``torch.jit.save``). ``--input-shape 8,3,32,32`` adds the checks that need a forward, on a
seeded standard-normal input. Exit status: 0 no hazards, 1 hazards found, 2 the model could not
be loaded.

**Trust model.** doctor imports the named module and calls its factory (or loads a TorchScript
file): that runs the model's code with your permissions. Only give it models you trust. Modules
are imported from the installed packages (``sys.path`` as Python sets it for the ``bnlab`` command,
which does not contain the current folder), so a folder in the current directory that happens to
be named like a package (``./torchvision/``) is not picked up; ``--path DIR`` adds a folder of
your own models, explicitly and last.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
import warnings
from typing import Any

import torch
from torch import nn

TRUST = (
    "doctor runs the model's code (it imports the module and calls the factory, or loads the TorchScript "
    "file): only give it models you trust"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"Trust: {TRUST}. The current folder is not searched for modules; --path DIR adds one."
    parser.add_argument(
        "model", nargs="?", default=None, help="module:factory (e.g. torchvision.models:resnet18) or a TorchScript file"
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        help="comma-separated shape of an example input, e.g. 8,3,32,32 (enables the forward checks)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--train", action="store_true", help="check the model in training mode (default: as built)")
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="also import models from DIR (searched after the installed packages; repeatable)",
    )


def load_model(spec: str, paths: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """A module from ``module:factory`` or a TorchScript file; ValueError saying what went wrong.

    ``paths``: folders to import from as well, searched *after* the installed packages (never the
    current folder unless named here)."""
    if os.path.isfile(spec):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript files are what users have
            return torch.jit.load(spec, map_location="cpu")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:factory or a TorchScript file (got {spec!r}, not a file either)")
    extra = [os.path.abspath(p) for p in paths]
    sys.path.extend(extra)  # after the installed packages: a local folder never shadows one
    try:
        obj: Any = importlib.import_module(module_name)
    finally:
        for p in extra:
            sys.path.remove(p)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"expected {module_name} to define {attr} (no attribute {part!r})")
        obj = getattr(obj, part)
    model = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected {spec} to give an nn.Module (got {type(model).__name__})")
    return model


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter or buffer (float32 on the
    CPU for a model without any): the example input is made to match, as the model's data would."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.float32, torch.device("cpu")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"expected --input-shape as comma-separated ints like 8,3,32,32 (got {text!r})") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"expected positive sizes in --input-shape (got {text!r})")
    return shape


def main(args) -> int:
    from .doctor import doctor

    if not args.model:
        print("bnlab doctor: expected a model: module:factory or a TorchScript file (got none)", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, args.path)
        example = None
        if args.input_shape:
            gen = torch.Generator().manual_seed(0)
            dtype, device = _model_dtype_device(model)
            example = torch.randn(parse_shape(args.input_shape), generator=gen).to(device=device, dtype=dtype)
    except (ValueError, ImportError, RuntimeError, TypeError) as err:
        print(f"bnlab doctor: {err}", file=sys.stderr)
        return 2
    if args.train:
        model.train()
    report = doctor(model, example)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return 1 if report.hazards else 0
