"""``archc``: the command-line driver."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .diagnostics import ArchError


def _defines(items) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ArchError(f"-D expects name=value, such as -D num_classes=10, but got '{item}'.")
        out[name] = value
    return out


def _load(args):
    from .api import load
    return load(Path(args.file), args.model, defines=_defines(args.define), max_nodes=args.max_nodes)


def cmd_check(args) -> int:
    g = _load(args)
    from .ir.stats import human, totals
    t = totals(g)
    shapes = ", ".join("(" + ", ".join(map(str, g.data(o)["shape"])) + ")" for o in g.outputs)
    print(f"{args.file}: model '{g.name}' is well-formed: {t['nodes']} nodes, {human(t['params'])} parameters, "
          f"output {shapes}")
    return 0


def cmd_stats(args) -> int:
    g = _load(args)
    from .ir.stats import stats_json, stats_table
    print(json.dumps(stats_json(g), indent=1) if args.json else stats_table(g))
    return 0


def cmd_fmt(args) -> int:
    from .syntax.formatter import format_source
    path = Path(args.file)
    if not path.is_file() or path.suffix != ".arch":
        raise ArchError(f"'{path}' is not an .arch file.")
    text = path.read_text(encoding="utf-8")
    out = format_source(text, str(path))
    if args.check:
        if out != text:
            print(f"{path}: would be reformatted", file=sys.stderr)
            return 1
        return 0
    if args.in_place:
        path.write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return 0


def cmd_ir(args) -> int:
    g = _load(args)
    from .ir.printer import print_graph
    print(print_graph(g))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .arch spec file")
    p.add_argument("--model", help="the model to compile, where the file defines several")
    p.add_argument("-D", dest="define", action="append", metavar="NAME=VALUE",
                   help="override a model parameter, e.g. -D num_classes=10 (repeatable)")
    p.add_argument("--max-nodes", type=int, default=100_000, help="refuse graphs with more nodes (default 100000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archc", description="The archdsl compiler for CNN architecture specs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("check", help="parse, elaborate and shape-check a spec")
    _common(p)
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("stats", help="per-layer shapes, parameters and MACs")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_stats)
    p = sub.add_parser("ir", help="print the canonical IR text")
    _common(p)
    p.set_defaults(fn=cmd_ir)
    p = sub.add_parser("fmt", help="format a spec canonically")
    p.add_argument("file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if the file is not formatted")
    g.add_argument("-i", "--in-place", action="store_true", help="rewrite the file")
    p.set_defaults(fn=cmd_fmt)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ArchError as err:
        print(str(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
