"""Bounds on the values a spec builds: the items they hold in all, and how deeply they nest.

Lists may share sublists, so a few steps build a value far larger than the steps spent:
``for i in range(40) { y = [y, y] }`` makes 2**41 items once written out, as saving the
IR or drawing it would. So every list or tuple a spec builds is measured as it is built:

* its *size* is its length plus the sizes of the lists and tuples in it, each counted every
  time it appears (the number of items written out), at most :data:`MAX_ITEMS`;
* its *depth* is 1 plus the depth of its deepest list or tuple item (0 for other values),
  at most :data:`MAX_VALUE_DEPTH`.

Measuring walks each distinct list once (a memo by identity), without recursion, and
remembers the measures of large lists, so that building ``[big, i]`` again and again costs
its two items, not the size of ``big``.
"""
from __future__ import annotations

MAX_ITEMS = 1_000_000
MAX_VALUE_DEPTH = 100
_REMEMBER_FROM = 16        # lists of at least this size (in all) keep their measure


class ValueTooLarge(Exception):
    """A value over a bound; the message is a full sentence."""


class ValueBounds:
    """The measures of the lists and tuples one elaboration has built (by identity; the list is kept
    alive with its measure, so its identity cannot be reused)."""

    def __init__(self):
        self._known: dict[int, tuple] = {}

    def measure(self, v) -> tuple[int, int]:
        """``(depth, size)`` of ``v``; raises :class:`ValueTooLarge` past a bound."""
        if not isinstance(v, (list, tuple)):
            return 0, 0
        known = self._known
        hit = known.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1], hit[2]
        memo: dict[int, tuple] = {}
        stack = [[v, 0, 0, len(v)]]            # a list, its next item, its deepest item's depth, its size
        while True:
            frame = stack[-1]
            obj, i = frame[0], frame[1]
            if i < len(obj):
                frame[1] = i + 1
                c = obj[i]
                if not isinstance(c, (list, tuple)):
                    continue
                m = memo.get(id(c))
                if m is None:
                    hit = known.get(id(c))
                    m = (hit[1], hit[2]) if hit is not None and hit[0] is c else None
                if m is None:
                    if len(stack) >= MAX_VALUE_DEPTH:
                        raise ValueTooLarge(_TOO_DEEP)
                    stack.append([c, 0, 0, len(c)])
                    continue
                depth, size = m
            else:
                stack.pop()
                depth, size = frame[2] + 1, frame[3]
                if depth > MAX_VALUE_DEPTH:
                    raise ValueTooLarge(_TOO_DEEP)
                if size > MAX_ITEMS:
                    raise ValueTooLarge(_TOO_BIG)
                memo[id(obj)] = (depth, size)
                if size >= _REMEMBER_FROM:
                    known[id(obj)] = (obj, depth, size)
                if not stack:
                    return depth, size
                frame = stack[-1]
            if depth > frame[2]:
                frame[2] = depth
            frame[3] += size
            if frame[3] > MAX_ITEMS:
                raise ValueTooLarge(_TOO_BIG)


_TOO_BIG = (f"This value would hold more than {MAX_ITEMS} items in all, counting the items of the lists and "
            "tuples inside it each time they appear (as saving or drawing the model writes them out); build a "
            "smaller value.")
_TOO_DEEP = f"This value nests lists or tuples more than {MAX_VALUE_DEPTH} levels deep; flatten it."
