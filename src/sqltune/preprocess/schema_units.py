"""A question's schema as ordered units with a decided drop order: what `schema_filter` and `schema_values` write.

Ranking happens here, at preprocess, which has the question, the schema and the database; budgeting happens in
`sqltune.prompt.build_prompt`, which has the tokenizer and max_seq_len. Between them is the record's `schema_units`:
the schema text cut into whole units, in display order, each with its place in the drop order:

- `table`: one table in the schema style (its kept columns, keys, and foreign keys to kept tables);
- `foreign_key` (dbgpt and rich, which state them apart from the tables) and `header` (dbgpt's table list);
- `values`: the cell values of the table that the question mentions, at most `schema_values` per column;
- `examples`: `schema_values` sample values of each kept text column (not for `rich`, whose tables carry samples);
- `comments` (with a filter): what tables.json's natural names add to a table's and its columns' names
  (`dept_name`: department name), only where they say more than the name itself.

A unit that belongs to tables (`needs`) is shown only with them. When a prompt is over its budget, `build_prompt`
drops whole units in this order, least relevant table first within each kind, until it fits: examples; tables no
word or value of the question points at (kept to make up `MIN_TABLES`; without a filter, every such table); values;
comments; then the other tables. A table is never cut in the middle and the question never at all. Recall (the
gold query's tables and columns the record keeps) and what the filter left out are reported per record and in the
preprocess summary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqltune.preprocess import schema_text as styles
from sqltune.preprocess.ranking import Ranking, name_words, rank_schema
from sqltune.preprocess.values import ValueIndex
from sqltune.prompt import hidden_units
from sqltune.sql.schema import DatabaseSchema
from sqltune.sql.usage import UnreadableQuery, Usage, used_names


class SchemaFilter(str, Enum):
    """The schema filters (also the CLI choice type of `sqltune preprocess --schema-filter`)."""

    none = "none"  # every table and column, as the schema style writes them
    lexical = "lexical"  # the tables and columns the question's words and values point at (ranking.py)


FILTERS = tuple(f.value for f in SchemaFilter)
DEFAULT_FILTER = SchemaFilter.none.value
# The drop order of unit kinds (first dropped first); within a kind, the least relevant table's unit first.
DROP_ORDER = ("examples", "filler", "values", "comments", "table", "foreign_key", "header")


@dataclass
class FilteredSchema:
    """What a record carries for one question: its units, what the filter left out, and the gold query's recall."""

    units: list[dict[str, Any]]
    left_out: dict[str, list[str]]  # {"tables": [...], "columns": ["table.column", ...]}
    recall: dict[str, list[int]] | None  # {"tables": [kept, used], "columns": [kept, used]}; None: gold unparsed

    @property
    def text(self) -> str:
        return "\n".join(unit["text"] for unit in self.units)


def question_schema(
    schema: DatabaseSchema,
    style: str,
    question: str,
    *,
    schema_filter: str,
    values: int,
    index: ValueIndex | None,
    gold_sql: str | None = None,
    keep_gold: bool = False,
    samples: dict[int, list[str]] | None = None,
    dialect: str = "sqlite",
) -> FilteredSchema:
    """The units of `schema` for `question` (see the module docstring).

    `index` holds the database's values (matched values and examples need it); `samples` are the `rich` style's
    inline samples (literals by column). With `keep_gold` (training records) the gold query's tables and columns
    are kept whatever their rank. `gold_sql` is in `dialect`.
    """
    usage = _usage(gold_sql, schema, dialect)
    matched = index.matches(question) if index is not None and (values or schema_filter != "none") else {}
    ranking = rank_schema(
        schema, question, matched, usage if keep_gold else None, keep_all=schema_filter == SchemaFilter.none.value
    )
    # Comments come with the filter; values alone (no filter) add nothing else to the style's own text.
    units = _units(schema, style, ranking, values, index, samples or {}, schema_filter != SchemaFilter.none.value)
    shown = {i for columns in ranking.columns.values() for i in columns}
    left_out = {
        "tables": [name for t, name in enumerate(schema.tables) if t not in ranking.columns],
        "columns": [
            f"{schema.tables[c.table]}.{c.name}"
            for i, c in enumerate(schema.columns)
            if c.table in ranking.columns and i not in shown
        ],
    }
    recall = None
    if usage is not None:
        recall = {
            "tables": [len(usage.tables & set(ranking.columns)), len(usage.tables)],
            "columns": [len(usage.columns & shown), len(usage.columns)],
        }
    return FilteredSchema(units, left_out, recall)


def _usage(sql: str | None, schema: DatabaseSchema, dialect: str) -> Usage | None:
    if not sql:
        return None
    try:
        return used_names(sql, schema, dialect)
    except UnreadableQuery:
        return None


def _comment(name: str, natural: str) -> str | None:
    """The natural name where it says more than the name (`dept_name` -> department name), else None."""
    natural = natural.strip()
    if not natural or name_words(name) == name_words(natural):
        return None
    return natural


def _units(
    schema: DatabaseSchema,
    style: str,
    ranking: Ranking,
    values: int,
    index: ValueIndex | None,
    samples: dict[int, list[str]],
    with_comments: bool,
) -> list[dict[str, Any]]:
    kept = set(ranking.columns)
    relevance = {t: position for position, t in enumerate(ranking.tables)}  # 0: the most relevant
    units: list[dict[str, Any]] = []
    tier: list[tuple[str, int]] = []  # per unit: (drop kind, relevance position of its table)
    table_unit: dict[int, int] = {}

    def add(kind: str, text: str, table: int | None, needs: list[int], drop_kind: str | None = None) -> int:
        unit: dict[str, Any] = {"kind": kind, "text": text}
        if table is not None:
            unit["table"] = schema.tables[table]
        if kind == "table" and table is not None:
            unit["columns"] = [schema.columns[i].name for i in ranking.columns[table]]
        if needs:
            unit["needs"] = needs
        units.append(unit)
        tier.append((drop_kind or kind, relevance.get(table, -1) if table is not None else -1))
        return len(units) - 1

    display = sorted(kept)  # the schema's own table order
    if style == "dbgpt":
        add("header", f"{schema.db_id} contains tables such as {', '.join(schema.tables[t].lower() for t in display)}.",
            None, [])  # fmt: skip
    for t in display:
        shown = frozenset(ranking.columns[t])
        if style == "ddl":
            text = styles.ddl_table(schema, t, _with_kept_targets(schema, shown, kept))
        elif style == "dbgpt":
            text = styles.dbgpt_table(schema, t, shown)
        elif style == "rich":
            text = styles.rich_table(schema, t, samples, shown)
        else:
            raise ValueError(f"unknown schema style {style!r}; expected one of {', '.join(styles.STYLES)}")
        filler = "filler" if t in ranking.fillers else None
        me = table_unit[t] = add("table", text, t, [], filler)
        columns = ranking.columns[t]
        if values:
            found = [(i, ranking.values[i][:values]) for i in columns if ranking.values.get(i)]
            if found:
                add("values", _values_text(schema, style, t, found), t, [me])
            if style != "rich" and index is not None:
                examples = [
                    (i, index.samples[i][:values])
                    for i in columns
                    if index.samples.get(i) and schema.columns[i].type.lower() in ("text", "others")
                ]
                if examples:
                    add("examples", _examples_text(schema, style, t, examples), t, [me])
        comments = [
            (i, note) for i in columns if (note := _comment(schema.columns[i].name, schema.columns[i].natural_name))
        ]
        table_note = _comment(schema.tables[t], schema.natural_tables[t])
        if with_comments and (comments or table_note):
            add("comments", _comments_text(schema, style, t, table_note, comments), t, [me])
    if style in ("dbgpt", "rich"):
        for source, target in schema.foreign_keys:
            a, b = schema.columns[source].table, schema.columns[target].table
            if source in ranking.columns.get(a, ()) and target in ranking.columns.get(b, ()):
                line = (styles.dbgpt_foreign_key if style == "dbgpt" else styles.rich_foreign_key)(
                    schema, source, target
                )
                add("foreign_key", line, None, sorted({table_unit[a], table_unit[b]}))
    order = sorted(
        range(len(units)), key=lambda u: (DROP_ORDER.index(tier[u][0]), -tier[u][1], u)
    )  # least relevant (largest position) first within a kind
    for rank, u in enumerate(order):
        units[u]["drop"] = rank
    return units


def _with_kept_targets(schema: DatabaseSchema, shown: frozenset[int], kept: set[int]) -> frozenset[int]:
    """`shown` plus the columns of kept tables that its foreign keys reference (so `ddl_table` writes those keys)."""
    targets = {
        target for source, target in schema.foreign_keys if source in shown and schema.columns[target].table in kept
    }
    return shown | frozenset(targets)


def _values_text(schema: DatabaseSchema, style: str, table: int, found: list[tuple[int, list[str]]]) -> str:
    name, parts = schema.tables[table], _column_values(schema, style, found)
    if style == "dbgpt":
        return f"The question's values in {name.lower()}: {parts}."
    return (
        f"-- values in {styles.quote(name)}: {parts}" if style == "ddl" else f"values in {styles.quote(name)}: {parts}"
    )


def _examples_text(schema: DatabaseSchema, style: str, table: int, found: list[tuple[int, list[object]]]) -> str:
    name, parts = schema.tables[table], _column_values(schema, style, found)
    if style == "dbgpt":
        return f"Table {name.lower()} has values such as {parts}."
    return f"-- examples in {styles.quote(name)}: {parts}"


def _column_values(schema: DatabaseSchema, style: str, found: Sequence[tuple[int, Sequence[object]]]) -> str:
    """`col v1, v2, col2 v3` (dbgpt) or `"col" = v1, v2; "col2" = v3`, the values as SQL literals."""
    if style == "dbgpt":
        return ", ".join(f"{schema.columns[i].name.lower()} {', '.join(map(styles._literal, vs))}" for i, vs in found)
    return "; ".join(
        f"{styles.quote(schema.columns[i].name)} = {', '.join(map(styles._literal, vs))}" for i, vs in found
    )


def _comments_text(
    schema: DatabaseSchema, style: str, table: int, table_note: str | None, found: list[tuple[int, str]]
) -> str:
    name = schema.tables[table]
    if style == "dbgpt":
        parts = [f"{name.lower()} means {table_note}"] if table_note else []
        parts += [f"{schema.columns[i].name.lower()} means {note}" for i, note in found]
        return f"In table {name.lower()}, " + ", ".join(parts) + "."
    parts = [f"{styles.quote(name)} = {table_note}"] if table_note else []
    parts += [f"{styles.quote(schema.columns[i].name)} = {note}" for i, note in found]
    prefix = "-- " if style == "ddl" else ""
    return f"{prefix}meanings in {styles.quote(name)}: " + "; ".join(parts)


class QuestionSchemas:
    """The units of every question of a split: each database's values are read once, each question ranked alone."""

    def __init__(
        self,
        schemas: dict[str, DatabaseSchema],
        style: str,
        database_file: Callable[[str], Path | None],
        *,
        schema_filter: str,
        values: int,
        keep_gold: bool,
        dialect: str = "sqlite",
    ) -> None:
        self.schemas, self.style, self.database_file = schemas, style, database_file
        self.schema_filter, self.values, self.keep_gold, self.dialect = schema_filter, values, keep_gold, dialect
        self._indexes: dict[str, ValueIndex] = {}
        self._samples: dict[str, dict[int, list[str]]] = {}

    def __call__(self, db_id: str, question: str, gold_sql: str | None) -> FilteredSchema:
        schema = self.schemas[db_id]
        if db_id not in self._indexes:
            path = self.database_file(db_id)
            self._indexes[db_id] = ValueIndex.read(schema, path)
            if self.style == "rich":
                self._samples[db_id] = styles.sample_values(schema, path) if path and path.is_file() else {}
        return question_schema(
            schema, self.style, question, schema_filter=self.schema_filter, values=self.values,
            index=self._indexes[db_id], gold_sql=gold_sql, keep_gold=self.keep_gold, samples=self._samples.get(db_id),
            dialect=self.dialect,
        )  # fmt: skip


def ranking_words(question: str, evidence: str | None) -> str:
    """What a question's schema is ranked on: the question, and BIRD-style evidence ("refers to", formulas), which
    names columns and values as the question does."""
    return f"{question} {evidence}" if evidence else question


def add_to_record(record: dict[str, Any], filtered: FilteredSchema) -> None:
    """The record fields of a filtered schema (the records contract: README, "Schema filter and values")."""
    record["schema_units"] = filtered.units
    record["schema_left_out"] = filtered.left_out
    if filtered.recall is not None:
        record["schema_recall"] = filtered.recall


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the filter kept and left out over a split: the preprocess manifest's `schema_filter` entry.

    Recall is the share of the gold queries' tables (columns) that the records keep, over every use (a table two
    questions read counts twice); `complete` the share of questions whose every gold table and column is kept.
    """
    used = {"tables": [0, 0], "columns": [0, 0]}
    complete = measured = left_tables = left_columns = 0
    for record in records:
        left_tables += len(record["schema_left_out"]["tables"])
        left_columns += len(record["schema_left_out"]["columns"])
        recall = record.get("schema_recall")
        if recall is None:
            continue
        measured += 1
        complete += all(kept == total for kept, total in recall.values())
        for kind in used:
            used[kind][0] += recall[kind][0]
            used[kind][1] += recall[kind][1]
    return {
        "recall_tables": round(used["tables"][0] / used["tables"][1], 4) if used["tables"][1] else None,
        "recall_columns": round(used["columns"][0] / used["columns"][1], 4) if used["columns"][1] else None,
        "complete_questions": round(complete / measured, 4) if measured else None,
        "questions_measured": measured,
        "tables_left_out": left_tables,
        "columns_left_out": left_columns,
    }


def shown_names(record: dict[str, Any], steps: int, schema: DatabaseSchema) -> tuple[set[int], set[int]] | None:
    """(table indices, column indices) of `schema` that `record`'s prompt shows after `steps` of trimming
    (`Prompt.schema_lines_dropped`): its table units left in, or for a record without units in the `ddl` style its
    first lines (a line per table). None where that cannot be told (a `dbgpt` or `rich` record without units)."""
    tables = {name.lower(): t for t, name in enumerate(schema.tables)}
    if record.get("schema_units"):
        units = record["schema_units"]
        hidden = hidden_units(units, steps)
        shown_tables, shown_columns = set(), set()
        for u, unit in enumerate(units):
            if unit["kind"] != "table" or u in hidden:
                continue
            t = tables[unit["table"].lower()]
            shown_tables.add(t)
            names = {name.lower() for name in unit["columns"]}
            shown_columns |= {i for i in schema.table_columns(t) if schema.columns[i].name.lower() in names}
        return shown_tables, shown_columns
    lines = record.get("schema", "").split("\n")
    if not all(line.startswith("CREATE TABLE ") for line in lines) or len(lines) != len(schema.tables):
        return None
    shown_tables = set(range(len(lines) - steps))
    return shown_tables, {i for i, column in enumerate(schema.columns) if column.table in shown_tables}
