"""How deeply SQL from a model or a user may nest before any parser or tree walker sees it.

Parsers (sqlglot's, the Spider parser) and the code that walks what they build recurse once per level of
nesting, so a model's `SELECT ((((...1...))))` a few thousand levels deep, or a long chain of nested CASE
expressions, raises RecursionError somewhere far from the question it came from, and a run that lets it escape
loses every answer made so far. One rule for every place that parses or walks such SQL (the candidate check and
its schema check, the GRPO reward, exact match, hardness): measure the nesting first with `check_depth`, which is
a flat scan, and treat a query over `MAX_DEPTH` as that item's failure; `bounded` turns a RecursionError that
still happens (a parser's own deep corner) into the same failure.

Real queries nest a few levels (Spider's and BIRD's 10,193 gold queries at most 6), so the bound, 4 times that, is
far from anything a person or a working model writes, and far from Python's recursion limit: sqlglot takes about
22 stack frames per level of parentheses (725 for 32 levels, of the 1,000 Python allows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

MAX_DEPTH = 24

# Quoted strings and identifiers, comments, and the tokens that open or close a level.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)|(?P<open>\(|\bcase\b)"""
    r"""|(?P<close>\)|\bend\b)""",
    re.IGNORECASE | re.DOTALL,
)


class SqlTooDeep(ValueError):
    """The query nests deeper than the parsers are allowed to follow."""


def nesting_depth(sql: str) -> int:
    """The deepest nesting of parentheses and CASE ... END in `sql`, outside quotes and comments."""
    depth = deepest = 0
    for match in _TOKEN.finditer(sql):
        if match["open"]:
            depth += 1
            deepest = max(deepest, depth)
        elif match["close"]:
            depth = max(0, depth - 1)
    return deepest


def check_depth(sql: str, limit: int = MAX_DEPTH) -> None:
    """Raise SqlTooDeep when `sql` nests deeper than `limit` levels."""
    depth = nesting_depth(sql)
    if depth > limit:
        raise SqlTooDeep(f"too deeply nested: {depth} levels of parentheses or CASE, more than the {limit} read")


@contextmanager
def bounded() -> Iterator[None]:
    """Run a parse or a tree walk of untrusted SQL; a RecursionError in it becomes SqlTooDeep."""
    try:
        yield
    except RecursionError:
        raise SqlTooDeep(f"too deeply nested: the parser ran out of stack (more than {MAX_DEPTH} levels?)") from None
