"""The documentation is executable: every example in docs/ is checked.

* Every ```arch block loads with :func:`archdsl.load` (each model it defines, with
  default arguments), with the working directory set to the page's folder so
  relative imports resolve as they would for a file saved next to the page.
  A block whose first line is a marker comment is treated specially:

  - ``# fragment``: not a complete file; skipped (keep these few);
  - ``# error: TEXT``: loading must raise an ArchError whose message contains TEXT;
    the block is loaded as ``example.arch``, and when the page's next fenced block
    is a ```text block starting with ``example.arch:``, it must equal the rendered
    error exactly;
  - ``# torchvision: NAME [param=value ...]``: besides loading, the last model
    (elaborated with these ``-D`` style overrides, e.g. a smaller input size) must
    have the parameter names and shapes of ``torchvision.models.NAME()``, and with
    its weights loaded the generated PyTorch module must compute the same outputs;
  - ``# file: NAME.arch``: the block is also saved as NAME.arch for the page's
    ```console examples.
* In ```console blocks, each ``$ archc ...`` line is run in-process and what it
  prints (stdout, then stderr) must equal the lines up to the next ``$``. Commands
  run in a scratch folder holding the page's ``# file:`` blocks and a copy of
  ``zoo_specs``.
* ```python blocks run (unless marked ``# fragment``) in a fresh namespace, in the
  same scratch folder as the console examples, and must not raise.
* In ```sh blocks, each ``archc`` command line whose sub-command is registered
  must be accepted by the argument parser.
* The op tables of docs/language.md must list exactly the registry's ops, with
  the registry's tensor counts, arguments and defaults, and name every parameter.
  ``python tests/test_docs.py`` prints the generated cells for new ops.
"""
from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.ir import ops

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LANGUAGE = DOCS / "language.md"


# ---- extracting fenced blocks ----------------------------------------------------

@dataclass(frozen=True)
class Block:
    page: Path
    line: int          # line of the opening fence (1-based)
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def marker(self) -> tuple[str, str]:
        first = self.text.split("\n", 1)[0].strip()
        m = re.match(r"#\s*(fragment|error|torchvision|file)\b:?\s*(.*)$", first)
        return (m.group(1), m.group(2).strip()) if m else ("", "")


def blocks_of(page: Path) -> list[Block]:
    out, lines, i = [], page.read_text(encoding="utf-8").split("\n"), 0
    while i < len(lines):
        m = re.match(r"^( *)```(\w[\w-]*)?\s*$", lines[i])       # fences may be indented (in lists)
        if m is None:
            i += 1
            continue
        indent, start, body = len(m.group(1)), i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        out.append(Block(page, start + 1, m.group(2) or "", "\n".join(body) + "\n"))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))] for b in blocks_of(page)]


BLOCKS = all_blocks()
ARCH = [b for b in BLOCKS if b.lang == "arch"]
CONSOLE = [b for b in BLOCKS if b.lang == "console"]
SH = [b for b in BLOCKS if b.lang in ("sh", "bash", "shell")]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def model_names(text: str) -> list[str]:
    """The models of an example that compile as they are (generic ones are reached through aliases)."""
    return [m.name for m in archdsl.list_models(text) if not m.required]


def test_the_docs_have_examples():
    assert LANGUAGE.is_file()
    assert len(ARCH) >= 20
    fragments = [b for b in ARCH if b.marker[0] == "fragment"]
    assert len(fragments) <= len(ARCH) // 5, "keep fragments few: make examples complete files"


# ---- ```arch blocks ---------------------------------------------------------------

def _load_all_models(block: Block) -> list:
    names = model_names(block.text)
    assert names, f"{block.id}: an example must define a model (mark it '# fragment' otherwise)"
    return [archdsl.load(block.text, name) for name in names]


@pytest.mark.parametrize("block", [b for b in ARCH if b.marker[0] in ("", "file", "torchvision")],
                         ids=lambda b: b.id)
def test_arch_example_loads(block, monkeypatch):
    monkeypatch.chdir(block.page.parent)
    _load_all_models(block)
    kind, value = block.marker
    if kind == "torchvision":
        name, *defines = value.split()
        graph = archdsl.load(block.text, model_names(block.text)[-1],
                             defines=dict(d.split("=", 1) for d in defines))
        _same_parameters_as_torchvision(graph, name)


def _same_parameters_as_torchvision(graph, name: str) -> None:
    """The spec's parameters are torchvision's by name and shape, and give the same outputs."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    twin = getattr(models, name)().eval()
    want = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    got = {k: tuple(p.shape) for k, p in graph.params.items()}
    assert sorted(got) == sorted(want)
    assert got == want
    ours = archdsl.to_torch(graph, load_weights=False).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(1, *graph.data(graph.inputs[0])["shape"][1:])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), twin(x), rtol=1e-4, atol=1e-5)


def _next_block(block: Block) -> Block | None:
    later = [b for b in BLOCKS if b.page == block.page and b.line > block.line]
    return later[0] if later else None


@pytest.mark.parametrize("block", [b for b in ARCH if b.marker[0] == "error"], ids=lambda b: b.id)
def test_arch_error_example_fails_as_documented(block, tmp_path, monkeypatch):
    expected = block.marker[1]
    assert expected, f"{block.id}: '# error:' needs the expected message text"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "example.arch").write_text(block.text, encoding="utf-8")
    with pytest.raises(ArchError) as info:
        archdsl.load("example.arch")
    assert expected in info.value.message
    shown = _next_block(block)
    if shown is not None and shown.lang == "text" and shown.text.startswith("example.arch:"):
        assert str(info.value) + "\n" == shown.text


# ---- ```console and ```sh blocks --------------------------------------------------------

def _console_steps(block: Block) -> list[tuple[str, str]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{block.id}: a console block starts with a '$ ' command"
            steps[-1][1].append(line)
    return [(cmd, "\n".join(out) + "\n" if out else "") for cmd, out in steps]


def _scratch(block: Block, tmp_path: Path, monkeypatch) -> None:
    """Work in ``tmp_path``, holding the page's ``# file:`` examples and a copy of zoo_specs."""
    for b in ARCH:
        if b.page == block.page and b.marker[0] == "file":
            (tmp_path / b.marker[1]).write_text(b.text, encoding="utf-8")
    shutil.copytree(ROOT / "zoo_specs", tmp_path / "zoo_specs")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("block", CONSOLE, ids=lambda b: b.id)
def test_console_example_prints_what_the_docs_show(block, tmp_path, monkeypatch, capsys):
    from archdsl.cli import main
    _scratch(block, tmp_path, monkeypatch)
    for cmd, expected in _console_steps(block):
        argv = shlex.split(cmd)
        assert argv[0] == "archc", f"{block.id}: console examples run archc only"
        capsys.readouterr()
        main(argv[1:])
        out = capsys.readouterr()
        assert out.out + out.err == expected, cmd


@pytest.mark.parametrize("block", [b for b in PYTHON if b.marker[0] != "fragment"], ids=lambda b: b.id)
def test_python_example_runs(block, tmp_path, monkeypatch):
    _scratch(block, tmp_path, monkeypatch)
    code = compile(block.text, f"{block.id}", "exec", dont_inherit=True)
    exec(code, {"__name__": "docs_example"})   # the docs' own Python, never spec text


def _archc_lines(block: Block):
    for raw in block.text.split("\n"):
        line = raw.strip()
        line = line[2:] if line.startswith("$ ") else line
        if line.startswith("archc "):
            words = shlex.split(line, comments=True)
            cut = [i for i, w in enumerate(words) if w in ("|", "&&", ";", ">", "2>")]
            yield words[1:cut[0]] if cut else words[1:]


@pytest.mark.parametrize("block", [b for b in SH if "archc " in b.text], ids=lambda b: b.id)
def test_shell_examples_use_real_options(block):
    from archdsl.cli import COMMANDS, build_parser
    parser = build_parser()
    for argv in _archc_lines(block):
        if argv and argv[0] in COMMANDS:
            try:
                parser.parse_args(argv)
            except SystemExit as exit_:
                pytest.fail(f"{block.id}: 'archc {shlex.join(argv)}' is rejected (exit {exit_.code})")


# ---- the op tables -----------------------------------------------------------------

def _show(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def _kind(kind: str) -> str:
    if kind.startswith("choice:"):
        return "\\|".join(f'"{c}"' for c in kind[7:].split("|"))   # a pipe escaped for the table
    return kind


def tensors_cell(op) -> str:
    return "1 or more" if op.arity is None else str(op.arity)


def args_cell(op) -> str:
    parts = [f"`{a.name}: {_kind(a.kind)}`" if a.required else f"`{a.name}: {_kind(a.kind)} = {_show(a.default)}`"
             for a in op.args]
    return ", ".join(parts) or "none"


def _sample_params(op) -> list[str]:
    """The parameter names ``op`` creates with default arguments on a small input."""
    if op.params is None:
        return []
    samples = {"int": 4, "pair": 3, "ints": (4,), "float": 1.0, "bool": True}
    attrs = {a.name: (samples[a.kind] if a.required else a.default) for a in op.args}
    for a in op.args:
        if a.kind == "pair" and attrs[a.name] is not None:
            v = attrs[a.name]
            attrs[a.name] = (v, v) if isinstance(v, int) else tuple(v)
    shape = ("N", 4, 8, 8) if op.name != "linear" else ("N", 4)
    return sorted(op.params(attrs, [shape]))


def documented_ops() -> dict[str, list[str]]:
    """Rows of the op tables in docs/language.md: op name -> its cells."""
    text = LANGUAGE.read_text(encoding="utf-8")
    m = re.search(r"<!-- op-table -->(.*?)<!-- /op-table -->", text, re.S)
    assert m, "docs/language.md must hold the op tables between <!-- op-table --> markers"
    rows: dict[str, list[str]] = {}
    for line in m.group(1).split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        name = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if name:
            assert name.group(1) not in rows, f"op '{name.group(1)}' is documented twice"
            rows[name.group(1)] = cells
    return rows


def callable_ops() -> dict:
    return {name: op for name, op in ops.OPS.items() if op.in_specs}


def test_op_tables_list_exactly_the_registry():
    rows = documented_ops()
    missing = sorted(set(callable_ops()) - set(rows))
    assert not missing, f"ops missing from docs/language.md: {missing}; run `python tests/test_docs.py`"
    assert sorted(set(rows) - set(callable_ops())) == []


@pytest.mark.parametrize("name", sorted(callable_ops()))
def test_op_table_row_matches_the_registry(name):
    op = ops.OPS[name]
    row = documented_ops().get(name)
    if row is None:
        pytest.skip("reported by test_op_tables_list_exactly_the_registry")
    assert len(row) == 5, f"{name}: a row has five cells: op | tensors | arguments | output shape | parameters"
    assert row[1] == tensors_cell(op)
    assert row[2] == args_cell(op)
    assert row[3], f"{name}: document the shape rule"
    for local in _sample_params(op):
        assert local in row[4], f"{name}: the parameter '{local}' is not documented"
    if not op.params:
        assert row[4] == "none"


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(set(callable_ops()) - set(documented_ops()))
    for n in names:
        op = ops.OPS[n]
        params = ", ".join(_sample_params(op)) or "none"
        print(f"| `{n}` | {tensors_cell(op)} | {args_cell(op)} | TODO shape rule | {params} |")
