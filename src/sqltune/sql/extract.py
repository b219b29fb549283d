"""Pull one SQL statement out of a model's free-form output.

Models wrap their answer in code fences, prefix it with "SQL:", add an explanation after it, end it with
a semicolon, or spread it over several lines. The evaluators want one statement on one line. An output
with no SQL at all becomes `NO_SQL`, a query that runs but can never equal a gold result or gold query,
so it honestly counts as wrong instead of being dropped (the raw output is kept beside it).
"""

from __future__ import annotations

import re

NO_SQL = "SELECT 'sqltune: no SQL in model output'"

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CTE = r"WITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^)]*\))?\s*AS\s*\("
# Where a query starts, best guess first: at a line start; then an upper-case SELECT after a prefix such as
# "SQL:"; then any select. A line-start rule keeps "with" or "select" inside prose from being taken.
_STARTS = (
    re.compile(rf"^[ \t]*(SELECT\b|{_CTE})", re.IGNORECASE | re.MULTILINE),
    re.compile(r"\b(SELECT)\b"),
    re.compile(rf"\b(SELECT\b|{_CTE})", re.IGNORECASE),
)
# A line that ends the query: a template marker the model echoes, or prose ("This query ...", "Note: ...").
_STOP_LINE = re.compile(r"^\s*(#{2,}|</?s>|<\|)|^\s*[A-Z][a-z]+(:|\s+[a-z]+\b)")
# Words that may start a continuation line of a query written in lower or title case ("From t", "Order by x").
_SQL_WORD_LIST = (
    "select from where group order by having limit offset join inner left right outer cross natural on and or not "
    "union intersect except as with case when then else end in exists asc desc distinct between like is null all "
    "count sum avg min max cast"
)
_SQL_WORDS = frozenset(_SQL_WORD_LIST.split())


def _query_start(text: str) -> int | None:
    for pattern in _STARTS:
        if match := pattern.search(text):
            return match.start(1)
    return None


def _first_statement(text: str) -> str:
    """Text up to the first `;` (or `#`) outside quotes, with every whitespace run outside quotes folded to a space."""
    out: list[str] = []
    quote = ""
    for char in text:
        if quote:
            out.append(" " if char in "\r\n\t" else char)
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
            out.append(char)
        elif char in ";#":  # '#' starts nothing in SQLite: it is an echoed "### Instruction" marker
            break
        elif char.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    return "".join(out).strip()


def _is_prose(line: str) -> bool:
    match = _STOP_LINE.match(line)
    if not match:
        return False
    words = re.findall(r"[A-Za-z]+", line)[:2]
    return match.group(1) is not None or not any(word.lower() in _SQL_WORDS for word in words)


def extract_sql(raw: str) -> str:
    """The first SQL statement in `raw`, on one line without a trailing semicolon; `NO_SQL` when there is none."""
    fenced = _FENCE.search(raw)
    text = fenced.group(1) if fenced and _query_start(fenced.group(1)) is not None else raw
    start = _query_start(text)
    if start is None:
        return NO_SQL
    kept: list[str] = []
    for index, line in enumerate(text[start:].split("\n")):
        if index and (not line.strip() or _is_prose(line)):
            break
        kept.append(line)
    sql = _first_statement("\n".join(kept))
    return sql or NO_SQL
