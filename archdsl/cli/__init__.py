"""``archc``: the command-line driver. Each sub-command lives in its own module here.

A command module defines ``register(subparsers)``, which adds its parser and
sets ``fn`` to a function taking the parsed arguments and returning the exit
status. User errors are :class:`ArchError` and print as diagnostics (exit 1).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..diagnostics import ArchError
from ..files import shown

COMMANDS = ["check", "models", "stats", "ir", "fmt", "compile", "opt", "passes", "run", "bench", "bench-frontend", "bench-construct",
            "bench-prune", "bench-quant", "viz", "train", "eval", "distill", "compress-report"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="archc", description="The archdsl compiler for CNN architecture specs.")
    parser.add_argument("--version", action="version", version=f"archc (archdsl) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
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
    except BrokenPipeError:
        return 0
    except MemoryError as err:       # numpy and torch say how much they could not allocate
        why = f" ({err})" if str(err) else ""
        print(f"error: The command ran out of memory{why}; give it a smaller --batch, input or model.",
              file=sys.stderr)
        return 1
    except OSError as err:           # a file the command's own checks did not foresee (a name too long, ...)
        if err.filename is None:
            raise
        print(f"{shown(err.filename)}: error: This file cannot be used: {err.strerror or err}.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
