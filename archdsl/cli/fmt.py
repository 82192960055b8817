"""``archc fmt``: canonical formatting of spec text."""
from __future__ import annotations

import sys
from pathlib import Path

from ..files import read_spec
from .common import writing


def run(args) -> int:
    from ..syntax.formatter import format_source
    path = Path(args.file)
    text = read_spec(path, what="formatted")      # the rule every command reads specs by
    out = format_source(text, str(path))
    if args.check:
        if out != text:
            print(f"{path}: would be reformatted", file=sys.stderr)
            return 1
        return 0
    if args.in_place:
        with writing(path):
            path.write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("fmt", help="format a spec canonically")
    p.add_argument("file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if the file is not formatted")
    g.add_argument("-i", "--in-place", action="store_true", help="rewrite the file")
    p.set_defaults(fn=run)
