"""`-k` keyword expressions: parsed by a small recursive-descent parser, never evaluated as Python."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.keywords import keyword_filter

NAMES = ["macvlan-vlan50", "macvlan-vlan60", "macvlan-private", "macvlan-vepa", "macvlan-vepa-hairpin",
         "ipvlan-multi-subnet-210"]


def selected(expr: str | None, names=NAMES) -> set[str]:
    keep = keyword_filter(expr)
    return {n for n in names if keep(n)}


# -- the behaviour harness/cli.py's keyword_filter had (copied from tests/unit/test_cli.py) --------------


@pytest.mark.parametrize("expr, expected", [
    (None, set(NAMES)),
    ("vlan50", {"macvlan-vlan50"}),
    ("VLAN50", {"macvlan-vlan50"}),
    ("vlan5 or vlan6", {"macvlan-vlan50", "macvlan-vlan60"}),
    ("vepa and not hairpin", {"macvlan-vepa"}),
    ("(private or vepa) and not hairpin", {"macvlan-private", "macvlan-vepa"}),
    ("not macvlan", {"ipvlan-multi-subnet-210"}),
])
def test_keyword_filter(expr, expected):
    assert selected(expr) == expected


@pytest.mark.parametrize("expr, bad", [
    ("__import__('os')", "'os'"),
    ("vlan50; x", "vlan50;"),
    ("a == b", "=="),
])
def test_anything_but_words_is_refused(expr, bad):
    with pytest.raises(HarnessError, match="cannot use") as exc:
        keyword_filter(expr)
    assert str(exc.value).startswith(f"-k: {expr!r}: cannot use {bad!r}")


def test_a_malformed_expression_is_reported_when_parsed_not_when_matched():
    with pytest.raises(HarnessError) as exc:
        keyword_filter("vlan50 and")
    assert str(exc.value) == "-k: 'vlan50 and': expected a word after 'and'"


# -- precedence: not > and > or ----------------------------------------------------------------------


@pytest.mark.parametrize("expr, expected", [
    # and binds tighter than or: a or (b and c)
    ("vlan50 or vepa and hairpin", {"macvlan-vlan50", "macvlan-vepa-hairpin"}),
    ("vepa and hairpin or vlan50", {"macvlan-vlan50", "macvlan-vepa-hairpin"}),
    # not binds tighter than and: (not a) and b
    ("not vepa and macvlan", {"macvlan-vlan50", "macvlan-vlan60", "macvlan-private"}),
    # not binds tighter than or: (not a) or b
    ("not macvlan or vlan50", {"ipvlan-multi-subnet-210", "macvlan-vlan50"}),
    ("not not vlan50", {"macvlan-vlan50"}),
    ("vlan50 or vlan60 or private", {"macvlan-vlan50", "macvlan-vlan60", "macvlan-private"}),
    ("macvlan and vepa and hairpin", {"macvlan-vepa-hairpin"}),
])
def test_precedence(expr, expected):
    assert selected(expr) == expected


@pytest.mark.parametrize("expr, expected", [
    ("(vlan50 or vepa) and hairpin", {"macvlan-vepa-hairpin"}),
    ("not (vepa or vlan5 or vlan6)", {"macvlan-private", "ipvlan-multi-subnet-210"}),
    ("((vlan50))", {"macvlan-vlan50"}),
    ("(not macvlan)or(vlan60)", {"ipvlan-multi-subnet-210", "macvlan-vlan60"}),  # no spaces needed
    ("  vlan50\t", {"macvlan-vlan50"}),
])
def test_parentheses(expr, expected):
    assert selected(expr) == expected


def test_empty_expression_selects_everything():
    assert selected("") == set(NAMES)
    assert selected("   ") == set(NAMES)


# -- words ------------------------------------------------------------------------------------------


def test_words_match_case_insensitive_substrings():
    keep = keyword_filter("Bridge")
    assert keep("macvlan-bridge") and keep("MACVLAN-BRIDGE") and not keep("macvlan-vepa")


@pytest.mark.parametrize("expr, expected", [
    ("scenario[netns]", {"macvlan-bridge.yaml::scenario[netns]"}),
    ("[dry-run]", {"macvlan-bridge.yaml::scenario[dry-run]"}),
    ("bridge and not [vm]", {"macvlan-bridge.yaml::scenario[netns]", "macvlan-bridge.yaml::scenario[dry-run]"}),
    ("bridge.yaml", {"macvlan-bridge.yaml::scenario[netns]", "macvlan-bridge.yaml::scenario[vm]",
                     "macvlan-bridge.yaml::scenario[dry-run]"}),
    ("multi_subnet", set()),
])
def test_words_may_hold_brackets_dots_and_dashes(expr, expected):
    names = ["macvlan-bridge.yaml::scenario[netns]", "macvlan-bridge.yaml::scenario[vm]",
             "macvlan-bridge.yaml::scenario[dry-run]"]
    assert selected(expr, names) == expected


def test_operators_are_words_only_when_whole():
    # "android" and "notes" are words, not the operators and/not
    keep = keyword_filter("notes or android")
    assert keep("release-notes") and keep("android-box") and not keep("other")


# -- errors name the expression and what is wrong -----------------------------------------------------


@pytest.mark.parametrize("expr, message", [
    ("a and", "-k: 'a and': expected a word after 'and'"),
    ("a or", "-k: 'a or': expected a word after 'or'"),
    ("not", "-k: 'not': expected a word after 'not'"),
    ("and a", "-k: 'and a': expected a word at the start, found 'and' at column 1"),
    ("a and or b", "-k: 'a and or b': expected a word after 'and', found 'or' at column 7"),
    ("(a or b", "-k: '(a or b': the '(' at column 1 is never closed"),
    ("(a b)", "-k: '(a b)': the '(' at column 1 is never closed, found 'b' at column 4"),
    ("a)", "-k: 'a)': unmatched ')' at column 2"),
    ("a b", "-k: 'a b': expected 'and' or 'or' between 'a' and 'b' (column 3)"),
    ("()", "-k: '()': expected a word after '(', found ')' at column 2"),
    ("a or (b and)", "-k: 'a or (b and)': expected a word after 'and', found ')' at column 12"),
])
def test_errors(expr, message):
    with pytest.raises(HarnessError) as exc:
        keyword_filter(expr)
    assert str(exc.value) == message


def test_absurd_nesting_is_an_error_not_a_crash():
    with pytest.raises(HarnessError, match="nested too deeply"):
        keyword_filter("(" * 5000 + "a" + ")" * 5000)

