"""Alert rule expressions: a small PromQL-shaped language over the agent's own metrics.

    expr     := or
    or       := and ("or" and)*            -- set operations on label sets
    and      := unless ("and" unless)*
    unless   := cmp ("unless" cmp)*
    cmp      := sum (("=="|"!="|">"|"<"|">="|"<=") sum)?     -- a filter: keeps the left value
    sum      := prod (("+"|"-") prod)*
    prod     := unary (("*"|"/") unary)*
    unary    := "-" unary | primary
    primary  := NUMBER | "(" expr ")" | selector
              | FUNC "(" selector "[" DURATION "]" ")"      -- rate, increase, delta, avg/min/max_over_time
              | AGG ["by" "(" tag, ... ")"] "(" expr ")"   -- sum, avg, min, max, count
    selector := measurement "." field ["{" tag ("="|"!="|"=~"|"!~") "string", ... "}"]

A vector maps a series' labels (its tags) to a value; operations between two vectors match series
with identical labels, as PromQL does by default. Counters are read with rate()/increase() over a
range, never as a single value.

Label regexes are RE2 (google-re2), as in PromQL: matching takes time linear in the label's length, so
no pattern (``(a+)+$``) can stall the event loop the rules are evaluated on. RE2 has no backreferences
or lookaround; such a pattern is a rule error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter, lt

import re2

from agent.units import parse_duration

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is raised to the rule loader, which names file, line and rule


def compile_label_regex(pattern: str):
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ExprError(f"bad regex {pattern!r} (RE2 syntax): {msg}") from None

Labels = tuple  # sorted ((tag, value), ...)
Vector = dict  # Labels -> float

FUNCS = ("rate", "increase", "delta", "avg_over_time", "min_over_time", "max_over_time")
AGGS = ("sum", "avg", "min", "max", "count")
CMP = ("==", "!=", ">=", "<=", ">", "<")


class ExprError(ValueError):
    pass


_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<dur>\[[^\]]*\])
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/()<>{},.=])
  | (?P<name>[A-Za-z_][A-Za-z0-9_:]*)
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"unexpected character at {pos + 1}: {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


@dataclass(frozen=True)
class Selector:
    measurement: str
    field: str
    matchers: tuple  # ((tag, op, value|compiled regex), ...)

    def matches(self, labels: dict) -> bool:
        for tag, op, val in self.matchers:
            have = labels.get(tag, "")
            if op == "=" and have != val or op == "!=" and have == val:
                return False
            if op == "=~" and not val.fullmatch(have) or op == "!~" and val.fullmatch(have):
                return False
        return True


@dataclass(frozen=True)
class Node:
    kind: str  # num, sel, func, agg, neg, bin, cmp, set
    a: object = None
    b: object = None
    c: object = None


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise ExprError(f"unexpected end, expected {value or kind}")
        k, v, pos = self.toks[self.i]
        if (value is not None and v != value) or (kind is not None and k != kind):
            raise ExprError(f"expected {value or kind} at {pos + 1}, got {v!r}")
        self.i += 1
        return v

    def parse(self) -> Node:
        node = self.or_()
        if self.i < len(self.toks):
            raise ExprError(f"unexpected {self.toks[self.i][1]!r} at {self.toks[self.i][2] + 1}")
        return node

    def _setop(self, word: str, sub: Callable[[], Node]) -> Node:
        left = sub()
        while self.peek(word):
            self.take()
            left = Node("set", word, left, sub())
        return left

    def or_(self) -> Node:
        return self._setop("or", self.and_)

    def and_(self) -> Node:
        return self._setop("and", self.unless)

    def unless(self) -> Node:
        return self._setop("unless", self.cmp)

    def cmp(self) -> Node:
        left = self.sum()
        if self.i < len(self.toks) and self.toks[self.i][1] in CMP:
            op = self.take()
            return Node("cmp", op, left, self.sum())
        return left

    def sum(self) -> Node:
        left = self.prod()
        while self.peek("+") or self.peek("-"):
            left = Node("bin", self.take(), left, self.prod())
        return left

    def prod(self) -> Node:
        left = self.unary()
        while self.peek("*") or self.peek("/"):
            left = Node("bin", self.take(), left, self.unary())
        return left

    def unary(self) -> Node:
        if self.peek("-"):
            self.take()
            return Node("neg", self.unary())
        return self.primary()

    def primary(self) -> Node:
        if self.i >= len(self.toks):
            raise ExprError("unexpected end of expression")
        kind, value, pos = self.toks[self.i]
        if kind == "num":
            self.i += 1
            return Node("num", float(value))
        if value == "(":
            self.take("(")
            node = self.or_()
            self.take(")")
            return node
        if kind != "name":
            raise ExprError(f"unexpected {value!r} at {pos + 1}")
        if value in FUNCS and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] == "(":
            self.i += 2
            sel = self.selector()
            rng = self.take(kind="dur")
            try:
                seconds = parse_duration(rng[1:-1].strip())
            except (ValueError, TypeError):
                raise ExprError(f"bad range {rng}") from None
            if seconds <= 0:
                raise ExprError(f"range {rng} must be positive")
            self.take(")")
            return Node("func", value, sel, seconds)
        if value in AGGS and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] in ("(", "by"):
            self.i += 1
            by: tuple = ()
            if self.peek("by"):
                self.take("by")
                self.take("(")
                names = []
                while not self.peek(")"):
                    names.append(self.take(kind="name"))
                    if not self.peek(")"):
                        self.take(",")
                self.take(")")
                by = tuple(names)
            self.take("(")
            inner = self.or_()
            self.take(")")
            return Node("agg", value, inner, by)
        return Node("sel", self.selector())

    def selector(self) -> Selector:
        meas = self.take(kind="name")
        self.take(".")
        field = self.take(kind="name")
        matchers = []
        if self.peek("{"):
            self.take("{")
            while not self.peek("}"):
                tag = self.take(kind="name")
                op = self.take()
                if op not in ("=", "!=", "=~", "!~"):
                    raise ExprError(f"bad label matcher {op!r} for {tag}")
                raw = self.take(kind="str")
                val = bytes(raw[1:-1], "utf-8").decode("unicode_escape")
                if op in ("=~", "!~"):
                    val = compile_label_regex(val)
                matchers.append((tag, op, val))
                if not self.peek("}"):
                    self.take(",")
            self.take("}")
        return Selector(meas, field, tuple(matchers))


def parse(text: str) -> Node:
    return Parser(text).parse()


def selectors(node) -> list[tuple[Selector, float]]:
    """Every (selector, range seconds or 0) an expression reads: for linting and history sizing."""
    if isinstance(node, Node):
        if node.kind == "sel":
            return [(node.a, 0.0)]
        if node.kind == "func":
            return [(node.b, node.c)]
        return [x for child in (node.a, node.b, node.c) for x in selectors(child)]
    return []


class Source:
    """What an expression reads: implemented by the engine's history."""

    def latest(self, sel: Selector, now: float) -> Vector: ...

    def window(self, sel: Selector, now: float, seconds: float) -> dict[Labels, list[tuple[float, float]]]: ...


def _range_fn(name: str, points: list[tuple[float, float]]) -> float | None:
    if not points:
        return None
    values = list(map(itemgetter(1), points))
    if name == "avg_over_time":
        return sum(values) / len(values)
    if name == "min_over_time":
        return min(values)
    if name == "max_over_time":
        return max(values)
    if len(points) < 2:
        return None
    if name == "delta":
        return values[-1] - values[0]
    # rate/increase: a decrease is a counter reset, counted from zero; without one (nearly always) the total
    # is last - first, found without a Python-level loop over the window
    if any(map(lt, values[1:], values)):
        total = 0.0
        for a, b in zip(values, values[1:]):
            total += b - a if b >= a else b
    else:
        total = values[-1] - values[0]
    if name == "increase":
        return total
    span = points[-1][0] - points[0][0]
    return total / span if span > 0 else None


def evaluate(node: Node, src: Source, now: float):
    """A float (scalar) or a Vector."""
    k = node.kind
    if k == "num":
        return node.a
    if k == "sel":
        return src.latest(node.a, now)
    if k == "func":
        out = {}
        for labels, pts in src.window(node.b, now, node.c).items():
            v = _range_fn(node.a, pts)
            if v is not None:
                out[labels] = v
        return out
    if k == "neg":
        v = evaluate(node.a, src, now)
        return -v if isinstance(v, float) else {lab: -x for lab, x in v.items()}
    if k == "agg":
        v = evaluate(node.b, src, now)
        if isinstance(v, float):
            return v
        groups: dict[Labels, list[float]] = {}
        for labels, x in v.items():
            key = tuple((t, val) for t, val in labels if t in node.c)
            groups.setdefault(key, []).append(x)
        fn = {"sum": sum, "min": min, "max": max, "count": len, "avg": lambda xs: sum(xs) / len(xs)}[node.a]
        return {key: float(fn(xs)) for key, xs in groups.items()}
    if k == "set":
        a, b = evaluate(node.b, src, now), evaluate(node.c, src, now)
        if isinstance(a, float) or isinstance(b, float):
            raise ExprError(f"'{node.a}' needs vectors on both sides")
        if node.a == "and":
            return {lab: x for lab, x in a.items() if lab in b}
        if node.a == "unless":
            return {lab: x for lab, x in a.items() if lab not in b}
        return {**b, **a}
    a, b = evaluate(node.b, src, now), evaluate(node.c, src, now)
    op = node.a
    if k == "bin":
        fn = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
              "/": lambda x, y: x / y if y else math.nan}[op]
    else:
        fn = {"==": lambda x, y: x == y, "!=": lambda x, y: x != y, ">": lambda x, y: x > y,
              "<": lambda x, y: x < y, ">=": lambda x, y: x >= y, "<=": lambda x, y: x <= y}[op]
    if isinstance(a, float) and isinstance(b, float):
        r = fn(a, b)
        return (1.0 if r else 0.0) if k == "cmp" else r
    if isinstance(a, float):
        pairs = {lab: (a, y) for lab, y in b.items()}
    elif isinstance(b, float):
        pairs = {lab: (x, b) for lab, x in a.items()}
    else:
        pairs = {lab: (x, b[lab]) for lab, x in a.items() if lab in b}
    if k == "cmp":  # a filter: keeps the vector side's value (the left one when both are vectors)
        keep_left = not isinstance(a, float)
        return {lab: (x if keep_left else y) for lab, (x, y) in pairs.items() if fn(x, y)}
    out = {lab: fn(x, y) for lab, (x, y) in pairs.items()}
    return {lab: v for lab, v in out.items() if not math.isnan(v)}
