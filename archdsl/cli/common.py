"""Arguments and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..diagnostics import ArchError


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .arch spec file")
    p.add_argument("--model", help="the model to compile, where the file defines several")
    p.add_argument("-D", dest="define", action="append", metavar="NAME=VALUE",
                   help="override a model parameter, e.g. -D num_classes=10 (repeatable)")
    p.add_argument("--max-nodes", type=int, default=100_000, help="refuse graphs with more nodes (default 100000)")


def defines(items) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ArchError(f"-D expects name=value, such as -D num_classes=10, but got '{item}'.")
        out[name] = value
    return out


def load_graph(args):
    """The graph IR of the spec named by the common arguments."""
    from ..api import load
    return load(Path(args.file), args.model, defines=defines(args.define), max_nodes=args.max_nodes)
