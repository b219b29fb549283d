"""Schema serialization styles: how a database's schema is spelled out in the prompt.

Every style is line-oriented, with the most important lines first, because `build_prompt` trims an
over-long schema by dropping whole lines from the end:

- `dbgpt`: DB-GPT-Hub's natural-language text (lower-cased names, one line per table ending in its
  primary key, one line per foreign key), except that a composite primary key is stated only for the
  table that owns it (DB-GPT-Hub repeats it, emptied, under every table).
- `ddl` (the default): one `CREATE TABLE` statement per line, with types, primary and foreign keys. It
  beat `dbgpt` in this project's accuracy benchmark (benchmarks/results/accuracy-cpu-smollm2-135m.md)
  and agrees with published prompt studies (DAIL-SQL's code representation, Rajkumar et al. 2022).
- `rich`: one line per table with column types and a few distinct sample values read from the SQLite
  file, then the foreign keys on lines of their own (sample values help models pick literals).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlglot import exp

from sqltune.log import get_logger
from sqltune.sql.schema import DatabaseSchema
from sqltune.sql.sqlite import UnreadableDatabase, open_read_only

log = get_logger(__name__)


class SchemaStyle(str, Enum):
    """The schema styles (also the CLI choice type of `sqltune preprocess`)."""

    dbgpt = "dbgpt"
    ddl = "ddl"
    rich = "rich"


STYLES = tuple(s.value for s in SchemaStyle)
DEFAULT_STYLE = SchemaStyle.ddl.value
SAMPLE_VALUES = 3
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_VALUE_CHARS = 40
Shown = frozenset[int]  # the column indices a table's text shows (a schema filter's choice; None: all)


def serialize_schema(
    schema: DatabaseSchema, style: str, db_path: Path | None = None, *, samples: dict[int, list[Any]] | None = None
) -> str:
    """The schema text of one database in `style`; `rich` reads sample values from `db_path` when it exists, or
    takes them as `samples` (raw values by column index: a live database's)."""
    if style == "dbgpt":
        return dbgpt_text(schema)
    if style == "ddl":
        return ddl_text(schema)
    if style == "rich" and samples is not None:
        literals = {i: [_literal(v) for v in values if not isinstance(v, bytes)] for i, values in samples.items()}
        return rich_text(schema, literals)
    if style == "rich":
        return rich_text(schema, sample_values(schema, db_path) if db_path and db_path.is_file() else {})
    raise ValueError(f"unknown schema style {style!r}; expected one of {', '.join(STYLES)}")


def _key_owner(schema: DatabaseSchema, key: tuple[int, ...]) -> int:
    return schema.columns[key[0]].table


def dbgpt_text(schema: DatabaseSchema) -> str:
    """DB-GPT-Hub's text: "<db> contains tables such as a, b. Table a has columns such as x, y. x is the primary key."""
    tables = [name.lower() for name in schema.tables]
    column = [c.name.lower() for c in schema.columns]
    text = f"{schema.db_id} contains tables such as {', '.join(tables)}. "
    for index, table in enumerate(tables):
        text += f"Table {table} has columns such as {', '.join(column[i] for i in schema.table_columns(index))}. "
        for key in schema.primary_keys:
            if _key_owner(schema, key) != index:
                continue
            if len(key) == 1:
                text += f"{column[key[0]]} is the primary key.\n"
            else:
                text += f"The combination of ({', '.join(column[i] for i in key)}) are the primary key.\n"
    for source, target in schema.foreign_keys:
        text += (
            f"The {column[source]} of {tables[schema.columns[source].table]} is the foreign key of "
            f"{column[target]} of {tables[schema.columns[target].table]}.\n"
        )
    return text.rstrip()  # DB-GPT-Hub ends with "\n"; a trailing empty line would count as a schema line


@lru_cache(maxsize=8192)
def _bare_name_ok(name: str) -> bool:
    """Whether SQLite itself accepts `name` unquoted as a column name (not for keywords such as ORDER or FROM).

    SQLite decides, not sqlglot: sqlglot's SQLite dialect has no reserved-word list (its tokenizer reads
    `order` as a plain name, and its generator quotes none), and SQLite is what runs the queries.
    """
    if not _PLAIN_NAME.fullmatch(name):
        return False
    with closing(sqlite3.connect(":memory:")) as connection:
        try:
            connection.execute(f"CREATE TABLE probe ({name} INTEGER)")
        except sqlite3.Error:
            return False
    return True


def quote(name: str) -> str:
    """An SQL identifier as sqlglot writes it for SQLite, double-quoted only when it needs to be."""
    return exp.to_identifier(name, quoted=not _bare_name_ok(name)).sql(dialect="sqlite")


def _primary_key_columns(schema: DatabaseSchema, table: int) -> list[int]:
    return [i for key in schema.primary_keys if _key_owner(schema, key) == table for i in key]


def ddl_text(schema: DatabaseSchema) -> str:
    """One `CREATE TABLE` per line, in table order (so trimming drops whole tables from the end)."""
    return "\n".join(ddl_table(schema, index) for index in range(len(schema.tables)))


def ddl_table(schema: DatabaseSchema, index: int, shown: Shown | None = None) -> str:
    """One table's `CREATE TABLE` line; with `shown`, only the columns and the foreign keys to tables it keeps."""
    columns = schema.table_columns(index)
    parts = [f"{quote(schema.columns[i].name)} {schema.columns[i].type}" for i in columns if _shows(shown, i)]
    keys = _primary_key_columns(schema, index)
    if keys and all(_shows(shown, i) for i in keys):
        parts.append(f"PRIMARY KEY ({', '.join(quote(schema.columns[i].name) for i in keys)})")
    for source, target in schema.foreign_keys:
        if schema.columns[source].table == index and _shows(shown, source) and _shows(shown, target):
            referenced = schema.columns[target]
            parts.append(
                f"FOREIGN KEY ({quote(schema.columns[source].name)}) REFERENCES "
                f"{quote(schema.tables[referenced.table])}({quote(referenced.name)})"
            )
    return f"CREATE TABLE {quote(schema.tables[index])} ({', '.join(parts)});"


def _literal(value: object) -> str:
    if isinstance(value, str):
        value = value if len(value) <= _MAX_VALUE_CHARS else value[:_MAX_VALUE_CHARS] + "..."
        return "'" + value.replace("'", "''").replace("\n", " ") + "'"
    return repr(value)


def sample_values(schema: DatabaseSchema, db_path: Path, limit: int = SAMPLE_VALUES) -> dict[int, list[str]]:
    """Up to `limit` distinct non-null values per column (as SQL literals), from one read-only connection.

    Columns that tables.json names but the database lacks (it happens in Spider) get no samples.
    """
    samples: dict[int, list[str]] = {}
    connection = open_for_values(schema, db_path)
    if connection is None:
        return samples
    try:
        for index, column in enumerate(schema.columns):
            if column.table < 0:
                continue
            try:
                rows = connection.execute(distinct_values_sql(schema, index, limit)).fetchall()
            except sqlite3.Error as exc:
                log.debug("%s: no sample values for %s: %s", db_path, _qualified(schema, index), exc)
                continue
            samples[index] = [_literal(row[0]) for row in rows if not isinstance(row[0], bytes)]
    finally:
        connection.close()
    return samples


def open_for_values(schema: DatabaseSchema, db_path: Path) -> sqlite3.Connection | None:
    """A read-only connection to read `schema`'s cell values from, or None (logged) when the database cannot be
    read. Text is decoded leniently: a few Spider databases hold Latin-1."""
    try:
        connection = open_read_only(db_path)
    except UnreadableDatabase as exc:
        log.warning("no values for database %s: %s", schema.db_id, exc)
        return None
    connection.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    return connection


def distinct_values_sql(schema: DatabaseSchema, column: int, limit: int) -> str:
    """Up to `limit` distinct non-null values of one column."""
    name, table = quote(schema.columns[column].name), quote(schema.tables[schema.columns[column].table])
    return f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL LIMIT {limit}"


def _qualified(schema: DatabaseSchema, column: int) -> str:
    return f"{quote(schema.tables[schema.columns[column].table])}.{quote(schema.columns[column].name)}"


def rich_text(schema: DatabaseSchema, samples: dict[int, list[str]]) -> str:
    """`table (col type primary key [v1, v2, v3]; ...)` per table, then `foreign key: a.x = b.y` lines."""
    lines = [rich_table(schema, index, samples) for index in range(len(schema.tables))]
    for source, target in schema.foreign_keys:
        lines.append(rich_foreign_key(schema, source, target))
    return "\n".join(lines)


def rich_table(schema: DatabaseSchema, index: int, samples: dict[int, list[str]], shown: Shown | None = None) -> str:
    """One table's `rich` line; with `shown`, only those columns."""
    keys = set(_primary_key_columns(schema, index))
    parts = []
    for i in schema.table_columns(index):
        if not _shows(shown, i):
            continue
        column = schema.columns[i]
        part = f"{quote(column.name)} {column.type}" + (" primary key" if i in keys else "")
        if samples.get(i):
            part += f" [{', '.join(samples[i])}]"
        parts.append(part)
    return f"{quote(schema.tables[index])} ({'; '.join(parts)})"


def rich_foreign_key(schema: DatabaseSchema, source: int, target: int) -> str:
    return f"foreign key: {_qualified(schema, source)} = {_qualified(schema, target)}"


def dbgpt_table(schema: DatabaseSchema, index: int, shown: Shown | None = None) -> str:
    """One table's `dbgpt` sentences (columns, then its primary key when every key column is shown)."""
    columns = [schema.columns[i].name.lower() for i in schema.table_columns(index) if _shows(shown, i)]
    text = f"Table {schema.tables[index].lower()} has columns such as {', '.join(columns)}."
    for key in schema.primary_keys:
        if _key_owner(schema, key) != index or not all(_shows(shown, i) for i in key):
            continue
        names = [schema.columns[i].name.lower() for i in key]
        if len(key) == 1:
            text += f" {names[0]} is the primary key."
        else:
            text += f" The combination of ({', '.join(names)}) are the primary key."
    return text


def dbgpt_foreign_key(schema: DatabaseSchema, source: int, target: int) -> str:
    column, tables = schema.columns, schema.tables
    return (
        f"The {column[source].name.lower()} of {tables[column[source].table].lower()} is the foreign key of "
        f"{column[target].name.lower()} of {tables[column[target].table].lower()}."
    )


def _shows(shown: Shown | None, column: int) -> bool:
    return shown is None or column in shown
