"""`-k EXPR`: pytest-like keyword expressions over scenario names, parsed (never `eval`ed).

A word matches when it is a case-insensitive substring of the name; words combine with `not`, `and`,
`or` (that precedence, tightest first) and parentheses:

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | primary
    primary := "(" expr ")" | WORD          WORD: [\\w.\\-\\[\\]]+ other than and/or/not

`keyword_filter(expr)` parses the whole expression at once and returns a predicate over names; any
mistake is a `HarnessError` that quotes the expression and says what is wrong, e.g.
`-k: 'a and': expected a word after 'and'`. An empty expression (or none) selects everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import HarnessError

__all__ = ["keyword_filter"]

Predicate = Callable[[str], bool]  # called with the name already lower-cased

_WORD = re.compile(r"[\w.\-\[\]]+")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = ("and", "or", "not")


@dataclass(frozen=True)
class _Token:
    text: str
    column: int  # 1-based, for messages

    @property
    def kind(self) -> str:
        if self.text in ("(", ")") or self.text in _OPERATORS:
            return self.text
        return "word"


def keyword_filter(expr: str | None) -> Callable[[str], bool]:
    """A predicate on names selecting what `expr` selects; raises HarnessError for a malformed `expr`."""
    if expr is None or not expr.strip():
        return lambda name: True
    try:
        predicate = _Parser(expr).parse()
    except RecursionError:
        raise HarnessError(f"-k: {expr!r}: nested too deeply") from None
    return lambda name: predicate(name.lower())


class _Parser:
    """Recursive descent over the token list; each rule returns a predicate on the lower-cased name."""

    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = self._tokenize(expr)
        self.pos = 0

    # -- errors ---------------------------------------------------------------------------------------

    def _error(self, what: str) -> HarnessError:
        return HarnessError(f"-k: {self.expr!r}: {what}")

    def _tokenize(self, expr: str) -> list[_Token]:
        tokens = []
        for m in _TOKEN.finditer(expr):
            text = m.group()
            token = _Token(text, m.start() + 1)
            if token.kind == "word" and not _WORD.fullmatch(text):
                raise self._error(f"cannot use {text!r} in a keyword expression (column {token.column}); "
                                  f"words are letters, digits, '_', '.', '-', '[' and ']'")
            tokens.append(token)
        return tokens

    # -- token stream ---------------------------------------------------------------------------------

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _accept(self, kind: str) -> _Token | None:
        token = self._peek()
        if token is not None and token.kind == kind:
            self.pos += 1
            return token
        return None

    def _previous(self) -> _Token | None:
        return self.tokens[self.pos - 1] if self.pos > 0 else None

    # -- grammar --------------------------------------------------------------------------------------

    def parse(self) -> Predicate:
        predicate = self._or()
        token = self._peek()
        if token is not None:
            if token.kind == ")":
                raise self._error(f"unmatched ')' at column {token.column}")
            before = self._previous()
            raise self._error(f"expected 'and' or 'or' between {before.text!r} and {token.text!r} "
                              f"(column {token.column})")
        return predicate

    def _or(self) -> Predicate:
        left = self._and()
        while self._accept("or"):
            right = self._and()
            left = _either(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._accept("and"):
            right = self._not()
            left = _both(left, right)
        return left

    def _not(self) -> Predicate:
        if self._accept("not"):
            inner = self._not()
            return lambda name: not inner(name)
        return self._primary()

    def _primary(self) -> Predicate:
        opening = self._accept("(")
        if opening:
            inner = self._or()
            if not self._accept(")"):
                token = self._peek()
                found = f", found {token.text!r} at column {token.column}" if token else ""
                raise self._error(f"the '(' at column {opening.column} is never closed{found}")
            return inner
        word = self._accept("word")
        if word:
            needle = word.text.lower()
            return lambda name: needle in name
        raise self._expected_word()

    def _expected_word(self) -> HarnessError:
        before = self._previous()
        where = f"after {before.text!r}" if before else "at the start"
        token = self._peek()
        if token is None:
            return self._error(f"expected a word {where}" if before else "expected a word")
        return self._error(f"expected a word {where}, found {token.text!r} at column {token.column}")


def _either(left: Predicate, right: Predicate) -> Predicate:
    return lambda name: left(name) or right(name)


def _both(left: Predicate, right: Predicate) -> Predicate:
    return lambda name: left(name) and right(name)
