"""``archc passes``: list the registered passes with their options and one-line descriptions."""
from __future__ import annotations

import json
import typing
from dataclasses import MISSING


def describe() -> list[dict]:
    from ..passes.base import format_value, option_type, registry
    out = []
    for name, cls in registry().items():
        opts = []
        for f in cls.options():
            typ = option_type(cls, f.name)
            args = [a.__name__ for a in typing.get_args(typ) if a is not type(None)]
            opts.append({"name": f.name, "type": f"{args[0]} or none" if args else typ.__name__,
                         "default": None if f.default is MISSING else format_value(f.default),
                         "doc": f.metadata.get("doc", "")})
        out.append({"name": name, "summary": cls.summary(), "options": opts})
    return out


def run(args) -> int:
    passes = describe()
    if args.json:
        print(json.dumps(passes, indent=1))
        return 0
    width = max(len(p["name"]) for p in passes)
    for p in passes:
        print(f"{p['name'].ljust(width)}  {p['summary']}")
        for o in p["options"]:
            default = f" = {o['default']}" if o["default"] is not None else " (required)"
            print(f"{' ' * width}    {o['name']}: {o['type']}{default}  {o['doc']}".rstrip())
    print('\nA pipeline lists passes with commas and options in braces, e.g. '
          'archc opt FILE --passes "fold-bn,dce" (docs/passes.md).')
    return 0


def register(sub) -> None:
    p = sub.add_parser("passes", help="list the optimisation passes and their options")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=run)
