"""Arguments and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from ..bench.host import SPIN_MAX
from ..diagnostics import ArchError, Span
from ..files import shown
from ..frontend.layers import DEFAULT_MAX_NODES

SAVED_IR = ".json"       # `archc ir -o FILE.json` (+ FILE.npz): accepted wherever a spec is
WEIGHT_FORMATS = ("pt", "safetensors")     # torch.save's zip of a pickle, or safetensors (no pickle at all)


def reject_spec_flags(args, what: str) -> None:
    """``--model`` and ``-D`` choose and configure a model of a spec; ``what`` has none to choose."""
    if getattr(args, "model", None) or getattr(args, "define", None):
        flag = "--model" if args.model else "-D"
        raise ArchError(f"{flag} applies to specs, but this is {what}, which holds one model with its parameters "
                        "already bound; leave it out or give the .arch spec.", Span.of_file(args.file))


def seed(text: str) -> int:
    """``--seed``: an integer NumPy and PyTorch both take, 0 to 2**63 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not '{text}'") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"a seed is an integer from 0 to 2**63 - 1, but it is {value}")
    return value


def spin(text: str) -> int:
    """``--spin``: an idle PyTorch worker's polls before it sleeps (``GOMP_SPINCOUNT``), 0 to SPIN_MAX."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of spins, not '{text}'") from None
    if not 0 <= value <= SPIN_MAX:
        raise argparse.ArgumentTypeError(f"a spin count is from 0 to {SPIN_MAX:,}, but it is {value}")
    return value


def add_spin_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spin", type=spin, metavar="SPINS",
                   help="times an idle PyTorch worker polls for work before it sleeps (sets GOMP_SPINCOUNT for "
                        "libgomp; default: the environment's, else it sleeps at once); 10000 is about 0.4 ms "
                        "and spares each operator a thread wake-up")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the .arch spec file, or an IR saved by `archc ir -o FILE.json`")
    p.add_argument("--model", help="the model to compile, where the file defines several")
    p.add_argument("-D", dest="define", action="append", metavar="NAME=VALUE",
                   help="override a model parameter, e.g. -D num_classes=10 (repeatable)")
    p.add_argument("--max-nodes", type=int, default=DEFAULT_MAX_NODES,
                   help=f"refuse graphs with more nodes (default {DEFAULT_MAX_NODES})")


def defines(items) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ArchError(f"-D expects name=value, such as -D num_classes=10, but got '{item}'.")
        if name in out:
            raise ArchError(f"-D {name} is given twice ({out[name]} and {value}); give each parameter once.")
        out[name] = value
    return out


def load_graph(args):
    """The graph IR of the spec (or saved IR) named by the common arguments."""
    path = Path(args.file)
    if path.suffix == SAVED_IR:
        reject_spec_flags(args, "a saved IR")
        from ..ir.serialize import load_checked
        return load_checked(path, max_nodes=args.max_nodes)
    from ..api import load
    return load(path, args.model, defines=defines(args.define), max_nodes=args.max_nodes)


def output_path(arg, inputs=(), suffixes: tuple = (), what: str = "-o") -> Path:
    """Where a command may write ``arg``: not a directory, in a directory that exists, not one of the
    command's ``inputs``, and with one of ``suffixes`` when given. A file already there is replaced, as
    compilers do. Errors are file-level diagnostics naming the path (``PATH: error: ...``)."""
    path = Path(arg)
    here = Span.of_file(shown(path))
    try:
        return _checked_output(path, here, inputs, suffixes, what)
    except OSError as err:          # a name too long, a permission on the way: asking about the path failed
        raise ArchError(f"Cannot write this file: {err.strerror or err}.", here) from None


def _checked_output(path: Path, here: Span, inputs, suffixes: tuple, what: str) -> Path:
    if path.is_dir():
        raise ArchError(f"{what} names a directory; give the name of a file to write, such as "
                        f"{path / ('model' + (suffixes[0] if suffixes else '.out'))}.", here)
    parent = path.parent
    if not parent.is_dir():
        raise ArchError(f"Cannot write here: the directory '{parent}' does not exist; create it first or give "
                        f"{what} a path in an existing directory.", here)
    if suffixes and path.suffix not in suffixes:
        raise ArchError(f"{what} must name a file ending in {' or '.join(suffixes)}, but it ends in "
                        f"'{path.suffix or '(no suffix)'}'.", here)
    for item in inputs:
        if item is not None and path.exists() and Path(item).exists() and path.samefile(item):
            raise ArchError(f"{what} names a file this command reads, which writing would destroy; choose "
                            "another output name.", here)
    return path


@contextlib.contextmanager
def writing(path):
    """Turns an operating-system error while writing ``path`` into a diagnostic that names it."""
    try:
        yield
    except IsADirectoryError:
        raise ArchError("Cannot write this file: a directory is in the way.", Span.of_file(path)) from None
    except OSError as err:
        raise ArchError(f"Cannot write this file: {err.strerror or err}.", Span.of_file(path)) from None


def add_pass_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--passes`` and what the passes receive: ``--verify``, ``--tolerance``, ``--data``, ``--seed``..."""
    p.add_argument("--passes", required=required,
                   help='the pass pipeline, e.g. "fold-bn,dce" (archc passes lists the passes and options)')
    p.add_argument("--verify", action="store_true",
                   help="run the model before and after every pass through PyTorch and fail if a pass moves the "
                        "outputs more than it expects to")
    p.add_argument("--tolerance", type=float, default=None,
                   help="override every pass's expected error for --verify (default: each pass's own; exact "
                        "passes allow 1e-4 in max|after - before| / max|before|)")
    p.add_argument("--print-ir-after", action="append", metavar="PASS",
                   help="print the canonical IR to standard error after the named pass (repeatable)")
    p.add_argument("--data", metavar="FILE.npz",
                   help="samples for passes that learn from data (calibration, importances) and for --verify: "
                        "an .npz with an array 'x' (inputs, batch first) and optionally 'y' (labels)")
    p.add_argument("--calib-samples", type=int, default=None, metavar="N",
                   help="calibrate quantisation on the first N samples of --data (default: the pass's own, 512)")
    p.add_argument("--seed", type=seed, default=0, help="seed for the passes' random choices (default 0)")
    p.add_argument("--device", default="cpu", help="where passes that run the model run it (default cpu)")
    p.add_argument("--progress", action="store_true", help="show progress bars for long passes")


def run_passes(graph, args):
    """The result of the pipeline ``args.passes`` on ``graph``, with the context the arguments describe."""
    from ..passes.context import PassContext, load_data
    from ..passes.pipeline import run_pipeline
    ctx = PassContext(data=load_data(args.data) if args.data else None, device=args.device, seed=args.seed,
                      progress=args.progress, verify=args.verify, tolerance=args.tolerance,
                      calib_samples=getattr(args, "calib_samples", None), source=args.data)
    return run_pipeline(graph, args.passes, print_ir_after=args.print_ir_after or (), ctx=ctx)


def add_weights_format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights-format", choices=WEIGHT_FORMATS, default=None,
                   help="how the weights written beside a spec or source are stored: pt (torch.save, the default) "
                        "or safetensors (no pickle; every --weights reads both)")


def weights_format(args, writes: bool, where: str) -> str:
    """The format of the weights file the command writes (``--weights-format``, default ``pt``); refused
    where the command writes none, so that the option never does nothing unnoticed."""
    if args.weights_format is not None and not writes:
        raise ArchError(f"--weights-format chooses how the weights beside {where} are stored, but this command "
                        "writes no weights file; leave the option out.")
    return args.weights_format or "pt"


def write_spec_weights(graph, spec_path, spec, fmt: str = "pt") -> None:
    """Write the weights of a graph emitted as a spec beside it (``OUT.pt`` or ``OUT.safetensors``, by the
    spec's names): a spec holds the architecture, the state_dict its values, which ``--weights`` loads
    strictly."""
    from ..backends.torch_source import weights_path
    from ..backends.weights import save_weights
    target = save_weights(graph, weights_path(spec_path, fmt), spec.param_name)
    print(f"wrote {target} (the weights, by the spec's names: load them with --weights {target.name})")
