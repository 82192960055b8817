"""``archc models``: the models a spec file defines, with their parameters."""
from __future__ import annotations

import json
from pathlib import Path


def run(args) -> int:
    from ..api import list_models
    models = list_models(Path(args.file))
    if args.json:
        print(json.dumps([{"name": m.name, "params": list(m.params), "required": list(m.required)}
                          for m in models], indent=1))
        return 0
    width = max((len(m.name) for m in models), default=0)
    for m in models:
        params = ", ".join(p + ("" if p in m.required else "?") for p in m.params)
        need = f"  (needs {', '.join(m.required)}: give them with -D)" if m.required else ""
        print(f"{m.name:<{width}}  ({params}){need}")
    print(f"{len(models)} model{'s' if len(models) != 1 else ''} in {args.file}; compile one with --model NAME"
          if len(models) != 1 else f"1 model in {args.file}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the models a spec file defines, with their parameters")
    p.add_argument("file", help="the .arch spec file")
    p.add_argument("--json", action="store_true", help="print JSON (name, params, required)")
    p.set_defaults(fn=run)
