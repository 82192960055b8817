"""Building the AST while the LALR parser runs: one reduction function per grammar rule.

Lark's own tree builder makes a parse tree, propagating positions through it, that a
Transformer then walks again. Doing both at once, with spans taken from the reduced
symbols directly, roughly halves the cost of parsing (docs/benchmarks.md). A reduction
shapes its children exactly as Lark's tree builder would:

* anonymous tokens (``"("``, keywords) are dropped, except in a ``!rule``;
* an absent optional ``[x]`` gives ``None``;
* helper rules (``_name`` and the repetitions Lark makes for ``x*``) are spliced into their parent;
* a ``?rule`` left with one child is that child.

A node's span runs from the first to the last symbol it reduces, anonymous tokens
included (Lark's ``propagate_positions``), and its height counts the levels of the parse
tree at and below it, for the nesting limit. The first :class:`ArchError` an AST
constructor raises is kept and the rest of the parse only checks syntax, so a syntax
error anywhere in the file is reported first, as when the tree was transformed after parsing.
"""
from __future__ import annotations

from lark import Token
from lark.parsers.lalr_analysis import Reduce
from lark.parsers.lalr_parser import _Parser

from ..diagnostics import ArchError, Span


class Reduced:
    """A reduced symbol: its AST value, the span of text it covers (None when it covers none) and
    its height in the parse tree. The position attributes are named as :class:`lark.Token`'s."""

    __slots__ = ("value", "line", "column", "end_line", "end_column", "start_pos", "end_pos", "height")

    def __init__(self, value, first, last, height: int):
        self.value, self.height = value, height
        if first is None:
            self.line = self.column = self.end_line = self.end_column = self.start_pos = self.end_pos = None
        else:
            self.line, self.column, self.start_pos = first.line, first.column, first.start_pos
            self.end_line, self.end_column, self.end_pos = last.end_line, last.end_column, last.end_pos


class Spliced(Reduced):
    """A helper rule's children (a list), to be spliced into the rule that uses it."""

    __slots__ = ()


def _plan(rule):
    """Which reduced symbols a rule keeps, which it splices, and where ``None`` stands for an absent
    ``[x]`` (as lark.parse_tree_builder.maybe_create_child_filter)."""
    expansion, opts = rule.expansion, rule.options
    if opts.empty_indices:
        s = "".join(str(int(b)) for b in opts.empty_indices)
        empty = [len(ones) for ones in s.split("0")]
    else:
        empty = [0] * (len(expansion) + 1)
    plan, nones = [], 0
    for i, sym in enumerate(expansion):
        nones += empty[i]
        if opts.keep_all_tokens or not (sym.is_term and sym.filter_out):
            plan.append((i, not sym.is_term and sym.name.startswith("_"), nones))
            nones = 0
    return tuple(plan), nones + empty[len(expansion)]


class Build:
    """One parse: the file name for spans, the AST constructors and the first error they raised."""

    def __init__(self, file: str, constructors):
        self.file = file
        self.constructors = constructors
        self.error: ArchError | None = None


def _reducer(rule, build: Build):
    plan, tail = _plan(rule)
    name = rule.alias or rule.options.template_source or rule.origin.name
    expand1 = rule.options.expand1 and not rule.alias
    splice = name.startswith("_")
    construct = None if splice else getattr(build.constructors, name, None)
    if expand1 and len(rule.expansion) == 1 and len(plan) == 1 and not plan[0][1] and not tail \
            and not plan[0][2]:
        return lambda children: children[0]        # `?a: b`: the child itself, span and height unchanged
    if construct is None and not splice and not expand1:
        raise AssertionError(f"grammar rule {name!r} has no AST constructor")
    file = build.file

    def reduce(children):
        first = last = None
        height = 0
        for c in children:
            if c.__class__ is Token:
                if first is None:
                    first = c
                last = c
            else:
                if c.line is not None:
                    if first is None:
                        first = c
                    last = c
                if c.height > height:
                    height = c.height
        args = []
        for i, expand, nones in plan:
            if nones:
                args.extend([None] * nones)
            c = children[i]
            if expand:
                if args:
                    args.extend(c.value)
                else:
                    args = c.value                 # left recursion (`x*`): extend the same list
            elif c.__class__ is Token:
                args.append(c)
            else:
                args.append(c.value)
        if tail:
            args.extend([None] * tail)
        if splice:
            return Spliced(args, first, last, height)
        if expand1 and len(args) == 1:
            only = args[0]
            return only if only.__class__ is Token else Reduced(only, first, last, height)
        if build.error is not None:
            return Reduced(None, first, last, height + 1)
        span = Span(file, first.line, first.column, last.end_line, last.end_column) if first is not None \
            else Span(file, 1, 1, 1, 1)
        try:
            value = construct(span, *args)
        except ArchError as err:
            build.error = err
            value = None
        return Reduced(value, first, last, height + 1)
    return reduce


_RULES: dict = {}


def _rules(table) -> list:
    """The rules the table reduces by, as the very objects it holds, so that looking up a callback
    never compares rules."""
    rules = _RULES.get(id(table))
    if rules is None or rules[0] is not table:
        found = {arg for actions in table.states.values() for action, arg in actions.values() if action is Reduce}
        rules = _RULES[id(table)] = (table, sorted(found, key=str))
    return rules[1]


def parse(lark, text: str, start: str, build: Build):
    """Parse ``text`` with ``lark``'s tables, building the AST with ``build``'s constructors. Returns the
    root :class:`Reduced` (or a Token); raises Lark's ``UnexpectedInput`` for a syntax error."""
    frontend = lark.parser
    table = frontend.parser._parse_table
    callbacks = {rule: _reducer(rule, build) for rule in _rules(table)}
    parser = _Parser(table, callbacks)
    return parser.parse(frontend._make_lexer_thread(text), start)
