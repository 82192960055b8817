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
from lark.exceptions import UnexpectedToken
from lark.lexer import LexerThread
from lark.parsers.lalr_analysis import Reduce
from lark.parsers.lalr_interactive_parser import InteractiveParser
from lark.parsers.lalr_parser_state import ParseConf, ParserState

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


def _PASS(children):
    return children[0]


def _reducer(rule, build: Build):
    plan, tail = _plan(rule)
    name = rule.alias or rule.options.template_source or rule.origin.name
    expand1 = rule.options.expand1 and not rule.alias
    splice = name.startswith("_")
    construct = None if splice else getattr(build.constructors, name, None)
    if expand1 and len(rule.expansion) == 1 and len(plan) == 1 and not plan[0][1] and not tail \
            and not plan[0][2]:
        return _PASS                               # `?a: b`: the child itself, span and height unchanged
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


_TABLES: dict = {}


def _compiled(table) -> tuple:
    """``(actions, rules)`` of a Lark parse table, for :func:`parse`'s loop: ``actions[state][symbol]`` is
    the state to shift to (``>= 0``) or ``~i`` to reduce by ``rules[i]``, the very rule objects the table
    holds, so that looking up a callback never compares rules."""
    got = _TABLES.get(id(table))
    if got is None or got[0] is not table:
        rules = sorted({arg for acts in table.states.values() for action, arg in acts.values() if action is Reduce},
                       key=str)
        index = {id(r): i for i, r in enumerate(rules)}
        actions = {state: {sym: (~index[id(arg)] if action is Reduce else arg) for sym, (action, arg) in acts.items()}
                   for state, acts in table.states.items()}
        got = _TABLES[id(table)] = (table, actions, rules)
    return got[1], got[2]


def parse(lark, tokens, start: str, build: Build):
    """Parse the stream ``tokens`` (:class:`lark.Token`, whitespace dropped) with ``lark``'s LALR tables,
    building the AST with ``build``'s constructors. Returns the root :class:`Reduced` (or a Token); raises
    Lark's ``UnexpectedToken`` for a syntax error, with an interactive parser at the failing state (what
    would have been accepted).

    The loop is Lark's ``ParserState.feed_token``, with two shortcuts: actions are plain ints, and a
    rule that passes its only child through (``?a: b``) changes the state on top of the stack and
    nothing else."""
    table = lark.parser.parser._parse_table
    actions, rules = _compiled(table)
    reducers = []
    for rule in rules:
        fn = _reducer(rule, build)
        size, origin = len(rule.expansion), rule.origin.name
        reducers.append((size, origin, None if fn is _PASS else fn))
    states, values = [table.start_states[start]], []
    end_state = table.end_states[start]
    for token in _with_end(tokens):
        typ = token.type
        while True:
            act = actions[states[-1]].get(typ)
            if act is None or (act >= 0 and typ == "$END"):
                raise _unexpected(lark, table, start, states, values, token)
            if act >= 0:
                states.append(act)
                values.append(token)
                break
            size, origin, fn = reducers[~act]
            if fn is None:
                states[-1] = actions[states[-2]][origin]
            else:
                if size:
                    children = values[-size:]
                    del states[-size:]
                    del values[-size:]
                else:
                    children = []
                values.append(fn(children))
                states.append(actions[states[-1]][origin])
            if typ == "$END" and states[-1] == end_state:
                return values[-1]
    raise AssertionError("the parse went past $END")


def _with_end(tokens):
    """``tokens``, then Lark's ``$END`` at the position of the last one."""
    token = None
    for token in tokens:
        yield token
    yield Token.new_borrow_pos("$END", "", token) if token is not None else Token("$END", "", 0, 1, 1)


def _unexpected(lark, table, start, states, values, token) -> UnexpectedToken:
    """Lark's error for ``token`` in the parser state ``states``, with an interactive parser to ask."""
    conf = ParseConf(table, {}, start)
    state = ParserState(conf, LexerThread(None, None), list(states), list(values))
    expected = {s for s in table.states[states[-1]] if s.isupper()}
    return UnexpectedToken(token, expected, state=state,
                           interactive_parser=InteractiveParser(lark.parser.parser.parser, state, state.lexer))
