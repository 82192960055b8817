"""The parser's LALR tables, without any cache file.

Lark's ``cache=True`` pickles the analysed grammar into a predictable file in the temp
directory and unpickles it on every run, so anyone who can write there could run code as
the user. Instead the tables are built when the grammar changes (``python -m
archdsl.syntax.tables``) and shipped as JSON next to this module (``arch_tables.json``,
data only: loading it runs no code). They are used only when they were built from the
same grammar text, parser options and Lark version; otherwise the grammar is analysed in
memory (about 0.1 s more at start-up). Nothing is written at run time.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef

TABLES = Path(__file__).with_name("arch_tables.json")
OPTIONS = dict(parser="lalr", lexer="basic", propagate_positions=True, start=["start", "expression"])


def key(grammar: str) -> str:
    """What the tables depend on: the grammar text, the options and Lark's version."""
    text = json.dumps([grammar, OPTIONS, lark.__version__], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode(v):
    """JSON for Lark's serialised tables: dicts with int keys become {"__int__": [[k, v], ...]}."""
    if isinstance(v, dict):
        if v and all(type(k) is int for k in v):
            return {"__int__": [[k, _encode(x)] for k, x in v.items()]}
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


def _decode(v):
    if isinstance(v, dict):
        if set(v) == {"__int__"}:
            return {k: _decode(x) for k, x in v["__int__"]}
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def build(grammar: str, postlex) -> Lark:
    return Lark(grammar, postlex=postlex, **OPTIONS)


def dump(grammar: str, postlex) -> str:
    """The tables of ``grammar`` as the JSON text of ``arch_tables.json``."""
    data, memo = build(grammar, postlex).memo_serialize([TerminalDef, Rule])
    data["options"] = {k: v for k, v in data["options"].items() if k != "postlex"}
    return json.dumps({"key": key(grammar), "data": _encode(data), "memo": _encode(memo)}, sort_keys=True,
                      separators=(",", ":")) + "\n"


def load(grammar: str, postlex) -> Lark:
    """The parser for ``grammar``: from the shipped tables when they match it, else analysed now."""
    try:
        saved = json.loads(TABLES.read_text(encoding="utf-8"))
        if saved.get("key") == key(grammar):
            return Lark._load_from_dict(_decode(saved["data"]), _decode(saved["memo"]), postlex=postlex)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return build(grammar, postlex)


if __name__ == "__main__":          # regenerate after editing grammars/arch.lark
    from .parser import grammar_text
    from .postlex import Postlex
    TABLES.write_text(dump(grammar_text(), Postlex()), encoding="utf-8")
    print(f"wrote {TABLES}")
