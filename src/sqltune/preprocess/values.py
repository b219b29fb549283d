"""Cell values of a database that a question mentions (BRIDGE / CodeS-style value retrieval), and a few samples.

A question names values more often than columns ("singers from France", "the dog breed 'ESK'"): the column that
holds the value is then the one to filter on, and the value's exact spelling is the literal to write. Per database,
`ValueIndex.read` reads the distinct values of its text columns once, read-only (`open_for_values`), bounded: at most
`MAX_DISTINCT` values per column, values of at most `MAX_VALUE_CHARS` characters, and per database a budget of
`MAX_STEPS` SQLite virtual-machine steps (a few seconds; counted, not timed, so the same database gives the same
values on a busy machine as on an idle one) and, as a backstop, `TIME_BUDGET_S` seconds. Over budget, SQLite
interrupts the scan, what was read by then is used, and the log says so (no Spider database comes near it: the
largest, formula_1, takes 4.3 million steps). `matches` looks every
word n-gram of the question up in the index: a match is a value whose words are exactly a run of the question's
words (case and punctuation aside), so "united states" finds 'United States' but "state" does not.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqltune.log import get_logger
from sqltune.preprocess.ranking import FUNCTION_WORDS, stem
from sqltune.preprocess.schema_text import distinct_values_sql, open_for_values, quote
from sqltune.sql.schema import DatabaseSchema

log = get_logger(__name__)

MAX_DISTINCT = 5000  # distinct values read per column
MAX_VALUE_CHARS = 64  # longer values are not indexed (free text, not something a question quotes)
MAX_STEPS = 50_000_000  # SQLite virtual-machine steps per database
TIME_BUDGET_S = 60.0  # per database, a backstop for a machine far slower than expected
_STEP_CHECK = 10_000  # how often (in steps) SQLite asks whether to go on
MAX_NGRAM = 6  # the longest run of question words looked up
SAMPLES = 10  # sample values kept per column (schema_values takes up to 10)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that name no value on their own: a one-word n-gram of these is not looked up.
_COMMON = FUNCTION_WORDS | {"other", "one"}
_TEXT_TYPES = ("text", "char", "clob", "string", "varchar")


def value_words(text: str) -> tuple[str, ...]:
    """The lower-cased, singular words of a value or a question: what matching compares ("Professors" finds
    'Professor')."""
    return tuple(stem(word.lower()) for word in _WORD.findall(text))


@dataclass
class ValueIndex:
    """The indexed values of one database: words of a value -> [(column index, the value as stored)]."""

    by_words: dict[tuple[str, ...], list[tuple[int, str]]] = field(default_factory=dict)
    samples: dict[int, list[object]] = field(default_factory=dict)  # column index -> a few distinct values
    complete: bool = True  # False when the time budget cut the scan short

    @classmethod
    def read(
        cls,
        schema: DatabaseSchema,
        db_path: Path | None,
        *,
        max_distinct: int = MAX_DISTINCT,
        max_steps: int = MAX_STEPS,
        time_budget_s: float = TIME_BUDGET_S,
    ) -> ValueIndex:
        """The index of the database at `db_path` (an empty one when it is missing or unreadable: logged)."""
        index = cls()
        if db_path is None or not db_path.is_file():
            return index
        connection = open_for_values(schema, db_path)
        if connection is None:
            return index
        deadline, steps = time.monotonic() + time_budget_s, [0]

        def over_budget() -> int:
            steps[0] += _STEP_CHECK
            return int(steps[0] > max_steps or time.monotonic() > deadline)

        connection.set_progress_handler(over_budget, _STEP_CHECK)
        by_words: defaultdict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
        try:
            for column_index, column in enumerate(schema.columns):
                if column.table < 0 or schema.tables[column.table].lower().startswith("sqlite_"):
                    continue  # "*", and SQLite's own tables (sqlite_sequence holds table names)
                where = f"{quote(schema.tables[column.table])}.{quote(column.name)}"
                is_text = column.type.lower() in _TEXT_TYPES or column.type.lower() == "others"
                limit = max_distinct if is_text else SAMPLES
                try:
                    rows = connection.execute(distinct_values_sql(schema, column_index, limit)).fetchall()
                except sqlite3.OperationalError as exc:
                    if steps[0] > max_steps or time.monotonic() > deadline:
                        index.complete = False
                        log.warning(
                            "values of database %s: the budget (%d steps, %.0f s) ran out at %s; matching uses "
                            "what was read", schema.db_id, max_steps, time_budget_s, where,
                        )  # fmt: skip
                        break
                    log.debug("%s: no values for %s: %s", db_path, where, exc)
                    continue
                except sqlite3.Error as exc:
                    log.debug("%s: no values for %s: %s", db_path, where, exc)
                    continue
                values = [row[0] for row in rows if not isinstance(row[0], bytes)]
                index.samples[column_index] = values[:SAMPLES]
                if not is_text:
                    continue
                for value in values:
                    if isinstance(value, str) and 0 < len(value) <= MAX_VALUE_CHARS:
                        words = value_words(value)
                        if words and len(words) <= MAX_NGRAM:
                            by_words[words].append((column_index, value))
        finally:
            connection.close()
        index.by_words = dict(by_words)
        return index

    def matches(self, question: str) -> dict[int, list[str]]:
        """Column index -> the values (as stored) the question mentions, longest mention first, each value once."""
        words = value_words(question)
        found: dict[int, list[str]] = {}
        spans = sorted(
            ((start, n) for n in range(1, MAX_NGRAM + 1) for start in range(len(words) - n + 1)),
            key=lambda span: -span[1],
        )
        for start, n in spans:
            gram = words[start : start + n]
            if n == 1 and (gram[0] in _COMMON or len(gram[0]) < 2):
                continue
            for column, value in self.by_words.get(gram, ()):
                if value not in found.setdefault(column, []):
                    found[column].append(value)
        return {column: values for column, values in found.items() if values}
