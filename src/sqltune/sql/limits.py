"""What one untrusted query may use and how it fails: shared by every sandbox (SQLite files in `execution`,
database servers in `server`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

from sqltune.errors import SqltuneError

Rows = list[tuple]

# SQLite's built-in core, aggregate, window, date, math and JSON functions (also those of newer SQLite versions).
# Left out: load_extension, fts3_tokenizer and other extension internals, and connection or build introspection.
ALLOWED_FUNCTIONS = frozenset(
    """
    abs char coalesce concat concat_ws format glob hex ifnull iif instr length like likelihood likely lower ltrim
    max min nullif octet_length printf quote random randomblob replace round rtrim sign soundex substr substring
    trim typeof unhex unicode unlikely upper zeroblob
    avg count group_concat string_agg sum total
    cume_dist dense_rank first_value lag last_value lead nth_value ntile percent_rank rank row_number
    date datetime julianday strftime time timediff unixepoch
    acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
    power radians sin sinh sqrt tan tanh trunc
    json json_array json_array_length json_error_position json_extract json_group_array json_group_object
    json_insert json_object json_patch json_quote json_remove json_replace json_set json_type json_valid
    """.split()  # noqa: SIM905 (one word list reads better than 110 quoted names)
)


class QueryError(Exception):
    """A query failed in the sandbox; `category` is one of the report's error categories."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class Limits:
    """What one query may use; every limit must be positive.

    `max_result_bytes` bounds the result as Python holds it (and any single string or blob SQLite builds);
    `max_heap_bytes` is SQLite's hard heap limit, which also holds its temporary storage. The heap limit is
    process-wide in SQLite and a PRAGMA can only lower it: in one process the lowest limit ever set applies.
    """

    timeout_s: float = 30.0
    max_rows: int = 100_000
    max_result_bytes: int = 128 * 2**20
    max_heap_bytes: int = 512 * 2**20

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if not value > 0:  # also catches NaN
                raise SqltuneError(f"sandbox limit {limit.name} must be positive, got {value!r}")


def row_bytes(row: tuple) -> int:
    """What one result row costs in memory, as the byte cap counts it."""
    return sys.getsizeof(row) + sum(map(sys.getsizeof, row))
