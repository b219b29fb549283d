"""`sqltune copy-db`: Spider/BIRD SQLite databases into PostgreSQL or DuckDB, so the benchmark runs on the target.

Through SQLAlchemy, one database at a time, in one transaction: the SQLite file is read as it is on disk
(`sqlite.open_read_only`), its tables, columns, primary and foreign keys reflected, and each becomes a table of the
target database that `{db_id}` in the URL names (created when the server allows it).

- Names are folded to lower case, as PostgreSQL folds unquoted names: Spider's gold SQL, which writes `Singer_ID`
  and `singer_id` for one column, keeps meaning the same (two names of a table that fold to one are an error).
- A column's type follows its values, since SQLite keeps any value in any column: integers only -> BIGINT,
  numbers -> DOUBLE PRECISION, text -> TEXT (PostgreSQL: with the "C" collation, SQLite's binary order), blobs ->
  the target's binary type; a column holding several kinds becomes TEXT. Text that is not UTF-8 is read as
  Latin-1 and NUL characters (which PostgreSQL text cannot hold) are dropped, and counted.
- A primary key is kept when its values are unique and not null (SQLite allows both violations); a foreign key
  when it references a kept key and every value it holds exists there. What is not kept is reported with the
  reason, never a failed copy. Tables load referenced first; PostgreSQL's foreign keys are also deferred to the
  commit, so a table may reference itself (DuckDB, which checks each row at once, does without such a key).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.sql.location import Databases, hide_password, url_dialect
from sqltune.sql.sqlite import UnreadableDatabase, open_read_only

log = get_logger(__name__)

BATCH_ROWS = 2000


@dataclass
class TableCopy:
    name: str
    rows: int = 0
    primary_key: list[str] = field(default_factory=list)


@dataclass
class CopyReport:
    """What one database's copy did: its tables, rows and keys, and what was changed or left out, with reasons."""

    db_id: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)
    foreign_keys: int = 0
    notes: list[str] = field(default_factory=list)  # keys left out and columns changed, each with its reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "db_id": self.db_id,
            "target": self.target,
            "tables": {t.name: {"rows": t.rows, "primary_key": t.primary_key} for t in self.tables},
            "rows": sum(t.rows for t in self.tables),
            "foreign_keys": self.foreign_keys,
            "notes": self.notes,
        }


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Source:
    """One SQLite database, read-only, with its tables' columns, keys and the kinds of values each column holds."""

    path: Path
    connection: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.connection = open_read_only(self.path)
        self.connection.text_factory = bytes  # decoded per value: UTF-8, else Latin-1

    def tables(self) -> list[str]:
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        return [_decode(row[0]) for row in self.connection.execute(query)]

    def columns(self, table: str) -> list[tuple[str, int]]:
        """(name, position in the primary key or 0) of each column."""
        rows = self.connection.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
        return [(_decode(row[1]), row[5]) for row in rows]

    def foreign_keys(self, table: str) -> list[tuple[list[str], str, list[str | None]]]:
        """(columns, referenced table, referenced columns; None: its primary key) of each foreign key."""
        keys: dict[int, tuple[list[str], str, list[str | None]]] = {}
        for row in self.connection.execute(f"PRAGMA foreign_key_list({_quote(table)})"):
            key = keys.setdefault(row[0], ([], _decode(row[2]), []))
            key[0].append(_decode(row[3]))
            key[2].append(_decode(row[4]) if row[4] is not None else None)
        return list(keys.values())

    def kinds(self, table: str, column: str) -> set[str]:
        query = f"SELECT DISTINCT typeof({_quote(column)}) FROM {_quote(table)}"
        return {row[0].decode() if isinstance(row[0], bytes) else row[0] for row in self.connection.execute(query)}

    def integers_only(self, table: str, column: str) -> bool:
        """Whether every non-null value of the column is an integer written as SQLite writes integers."""
        c = _quote(column)
        query = f"SELECT 1 FROM {_quote(table)} WHERE {c} IS NOT NULL AND CAST(CAST({c} AS INTEGER) AS TEXT) != {c}"
        return self.connection.execute(query + " LIMIT 1").fetchone() is None

    def unique_not_null(self, table: str, columns: Sequence[str]) -> str | None:
        """Why `columns` cannot be a key of `table` (nulls or duplicates), or None."""
        cols = ", ".join(map(_quote, columns))
        nulls = " OR ".join(f"{_quote(c)} IS NULL" for c in columns)
        if self.connection.execute(f"SELECT 1 FROM {_quote(table)} WHERE {nulls} LIMIT 1").fetchone():
            return "it holds NULL"
        query = f"SELECT 1 FROM {_quote(table)} GROUP BY {cols} HAVING count(*) > 1 LIMIT 1"
        return "it holds duplicates" if self.connection.execute(query).fetchone() else None

    def dangling(self, table: str, columns: Sequence[str], target: str, target_columns: Sequence[str]) -> bool:
        """Whether some non-null value of `table.columns` is missing from `target.target_columns`."""
        match = " AND ".join(f"s.{_quote(a)} = t.{_quote(b)}" for a, b in zip(columns, target_columns, strict=True))
        present = " AND ".join(f"s.{_quote(c)} IS NOT NULL" for c in columns)
        query = (
            f"SELECT 1 FROM {_quote(table)} AS s WHERE {present} AND NOT EXISTS "
            f"(SELECT 1 FROM {_quote(target)} AS t WHERE {match}) LIMIT 1"
        )
        return self.connection.execute(query).fetchone() is not None

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[list[tuple]]:
        cursor = self.connection.execute(f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(table)}")
        while batch := cursor.fetchmany(BATCH_ROWS):
            yield batch


def _column_kinds(src: _Source, report: CopyReport) -> dict[tuple[str, str], set[str]]:
    """The kinds of value each column holds, by folded (table, column) name. A text column of integers joined by a
    foreign key to an integer column counts as integers: SQLite compares the two as numbers, PostgreSQL could
    not compare them at all."""
    kinds: dict[tuple[str, str], set[str]] = {}
    for name in src.tables():
        folded = [column.lower() for column, _ in src.columns(name)]
        if name.lower() in {table for table, _ in kinds}:
            raise SqltuneError(f"{src.path}: two tables fold to one name {name.lower()!r}")
        if len(set(folded)) < len(folded):
            raise SqltuneError(f"{src.path}: table {name!r} has columns whose names fold to one")
        for column, _ in src.columns(name):
            kinds[name.lower(), column.lower()] = src.kinds(name, column) - {"null"}
    for name in src.tables():
        for columns, referenced, ref_columns in src.foreign_keys(name):
            for column, ref_column in zip(columns, ref_columns, strict=True):
                pair = [(name, column), (referenced, ref_column)]
                if ref_column is None or any((t.lower(), c.lower()) not in kinds for t, c in pair):
                    continue
                sides = [kinds[t.lower(), c.lower()] for t, c in pair]
                for (table, text_column), this, other in ((pair[0], *sides), (pair[1], *reversed(sides))):
                    if this == {"text"} and other == {"integer"} and src.integers_only(table, text_column):
                        kinds[table.lower(), text_column.lower()] = {"integer"}
                        report.notes.append(
                            f"{table}.{text_column}: text holding integers, copied as integers like the key it "
                            "joins (SQLite compares the two as numbers)"
                        )
    return kinds


def _column_type(kinds: set[str], dialect: str) -> tuple[Any, Callable[[Any], Any]]:
    """The target type for a column holding values of these SQLite kinds, and how each value converts."""
    from sqlalchemy import BigInteger, Double, LargeBinary, Text

    kinds = kinds - {"null"}
    text = Text(collation="C") if dialect == "postgres" else Text()
    if kinds <= {"integer"}:
        return BigInteger(), lambda v: int(v) if v is not None else None
    if kinds <= {"integer", "real"}:
        return Double(), lambda v: v
    if kinds == {"blob"}:
        return LargeBinary(), lambda v: v
    return text, _as_text


def _as_text(value: Any) -> Any:
    if value is None:
        return None
    text = _decode(value) if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "")


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(url)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database `url` names when it does not exist (through the server's `postgres`
    database; needs CREATEDB). A DuckDB file is created by connecting to it."""
    if url_dialect(url) != "postgres":
        return
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    parsed = make_url(url)
    admin = _engine(parsed.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database})
            if exists.first() is None:
                conn.execute(text(f"CREATE DATABASE {_quote(parsed.database or '')}"))
                log.info("created database %s", parsed.database)
    except SQLAlchemyError as exc:
        raise SqltuneError(f"{hide_password(url)}: cannot create the database: {str(exc).splitlines()[0]}") from None
    finally:
        admin.dispose()


def copy_database(source: Path, url: str, db_id: str, *, overwrite: bool = False) -> CopyReport:
    """Copy one SQLite file into the database `url` names (see the module docstring)."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, Table, inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    dialect = url_dialect(url)
    report = CopyReport(db_id, hide_password(url))
    try:
        src = _Source(source)
    except UnreadableDatabase as exc:
        raise SqltuneError(f"database {db_id}: {exc}") from None
    with closing(src.connection):
        metadata = MetaData()
        tables: dict[str, tuple[Table, list[str], list[Callable[[Any], Any]]]] = {}
        keys: dict[str, list[str]] = {}
        kinds = _column_kinds(src, report)
        for name in src.tables():
            target = name.lower()
            columns = src.columns(name)
            converters, target_columns = [], []
            for column, _ in columns:
                column_type, convert = _column_type(kinds[target, column.lower()], dialect)
                target_columns.append(Column(column.lower(), column_type, autoincrement=False))
                converters.append(convert)
            table = Table(target, metadata, *target_columns)
            primary = [column for column, position in sorted(columns, key=lambda c: c[1]) if position]
            if primary:
                if why := src.unique_not_null(name, primary):
                    report.notes.append(f"primary key {name}({', '.join(primary)}): {why}")
                else:
                    table.append_constraint(PrimaryKeyConstraint(*(c.lower() for c in primary)))
                    keys[target] = [c.lower() for c in primary]
            tables[target] = (table, [column for column, _ in columns], converters)
        by_lower = {name.lower(): name for name in src.tables()}
        for name in src.tables():
            for columns, referenced, ref_columns in src.foreign_keys(name):
                report.foreign_keys += _add_foreign_key(
                    src, tables, keys, by_lower, name, columns, referenced, ref_columns, report, dialect
                )
        engine = _engine(url)
        try:
            with engine.begin() as conn:
                existing = set(inspect(conn).get_table_names())
                clash = sorted(existing & set(tables))
                if clash and not overwrite:
                    raise SqltuneError(
                        f"{report.target} already has table(s) {', '.join(clash[:5])}: pass --overwrite to replace them"
                    )
                cascade = " CASCADE" if dialect == "postgres" else ""
                dependents_first = [t.name for t in reversed(metadata.sorted_tables) if t.name in clash]
                for name in dependents_first:
                    conn.execute(text(f"DROP TABLE IF EXISTS {_quote(name)}{cascade}"))
                metadata.create_all(conn)
                order = {table.name: i for i, table in enumerate(metadata.sorted_tables)}  # referenced first
                for target, (table, columns, converters) in sorted(tables.items(), key=lambda t: order[t[0]]):
                    copied = TableCopy(target, primary_key=keys.get(target, []))
                    names = [c.name for c in table.columns]
                    for batch in src.rows(by_lower[target], columns):
                        rows = [{n: f(v) for n, f, v in zip(names, converters, row, strict=True)} for row in batch]
                        conn.execute(table.insert(), rows)
                        copied.rows += len(rows)
                    report.tables.append(copied)
        except SQLAlchemyError as exc:
            raise SqltuneError(f"database {db_id} -> {report.target}: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
    return report


def _add_foreign_key(
    src: _Source,
    tables: dict[str, Any],
    keys: dict[str, list[str]],
    by_lower: dict[str, str],
    table: str,
    columns: list[str],
    referenced: str,
    ref_columns: list[str | None],
    report: CopyReport,
    dialect: str,
) -> int:
    """Add one foreign key to `table` when the data allows it (1), else report why not (0)."""
    from sqlalchemy import ForeignKeyConstraint

    target = referenced.lower()
    described = f"foreign key {table}({', '.join(columns)}) -> {referenced}"
    if target not in tables:
        report.notes.append(f"{described}: no table {referenced}")
        return 0
    wanted = [c.lower() if c else None for c in ref_columns]
    if None in wanted:
        wanted = keys.get(target, [])
    if not keys.get(target) or sorted(wanted) != sorted(keys[target]):
        report.notes.append(f"{described}({', '.join(c or '?' for c in ref_columns)}): not its primary key")
        return 0
    source_names = {c.lower(): c for c, _ in src.columns(table)}
    target_names = {c.lower(): c for c, _ in src.columns(by_lower[target])}
    if any(c.lower() not in source_names for c in columns) or any(c not in target_names for c in wanted):
        report.notes.append(f"{described}: names a column that does not exist")
        return 0
    source_table, target_table = tables[table.lower()][0], tables[target][0]
    types = [
        (str(source_table.c[a.lower()].type), str(target_table.c[b].type)) for a, b in zip(columns, wanted, strict=True)
    ]
    if any(a != b for a, b in types):
        report.notes.append(
            f"{described}: its values are of another type ({', '.join(f'{a} vs {b}' for a, b in types)})"
        )
        return 0
    if src.dangling(table, columns, by_lower[target], [target_names[c] for c in wanted]):
        report.notes.append(f"{described}: some values are not in {referenced}")
        return 0
    if dialect != "postgres" and target == table.lower():
        report.notes.append(
            f"{described}: {dialect} checks each row at once, so a table's reference to itself is left out"
        )
        return 0
    deferred = {"deferrable": True, "initially": "DEFERRED"} if dialect == "postgres" else {}
    constraint = ForeignKeyConstraint([c.lower() for c in columns], [f"{target}.{c}" for c in wanted], **deferred)
    tables[table.lower()][0].append_constraint(constraint)
    return 1


def copy_databases(db_dir: Path, url: str, db_ids: Sequence[str], *, overwrite: bool = False) -> list[dict[str, Any]]:
    """Copy `<db_dir>/<db_id>/<db_id>.sqlite` of each db_id (all under `db_dir` when none is given) into the
    database `url` names (`{db_id}` in it: one database each)."""
    if not db_dir.is_dir():
        raise SqltuneError(f"--db-dir {db_dir} is not a directory")
    ids = list(db_ids) or sorted(p.name for p in db_dir.iterdir() if (p / f"{p.name}.sqlite").is_file())
    if not ids:
        raise SqltuneError(f"--db-dir {db_dir} holds no <db_id>/<db_id>.sqlite")
    databases = Databases(url=url)
    reports = []
    for db_id in ids:
        source = db_dir / db_id / f"{db_id}.sqlite"
        if not source.is_file():
            raise SqltuneError(f"--db-id {db_id}: no SQLite file {source}")
        target = databases.server(db_id).url
        ensure_database(target)
        report = copy_database(source, target, db_id, overwrite=overwrite)
        log.info("copied %s: %d tables, %d rows", db_id, len(report.tables), sum(t.rows for t in report.tables))
        reports.append(report.to_dict())
    return reports
