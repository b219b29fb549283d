"""A database's schema read from the database itself (SQLAlchemy's inspector), as the Spider reader writes it.

DuckDB's is read from DuckDB's own catalog functions (`duckdb_columns()`, `duckdb_constraints()`): duckdb-engine's
inspector asks for PostgreSQL catalogs DuckDB 2 no longer emulates.

For one's own database there is no tables.json: the tables of the URL's default schema, their columns and types,
primary and foreign keys become the same `DatabaseSchema` a tables.json entry gives (column 0 is Spider's "*",
natural names are the names with spaces for underscores), so every schema style serializes it unchanged; sample
values for the `rich` style are read in a read-only transaction, as SQLite would hold them.
"""

from __future__ import annotations

import copy
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.sql.location import ServerDatabase
from sqltune.sql.schema import Column, DatabaseSchema


def _type_name(column_type: Any, dialect: Any) -> str:
    """The column's type as the engine writes it, without a collation (`TEXT`, `BIGINT`, `NUMERIC(10, 2)`)."""
    if getattr(column_type, "collation", None):
        column_type = copy.copy(column_type)
        column_type.collation = None
    try:
        return column_type.compile(dialect=dialect).lower()
    except Exception:  # a type SQLAlchemy reflects but cannot compile back (NullType)
        return "text"


def _natural(name: str) -> str:
    return name.replace("_", " ").lower()


def read_live_schema(
    database: ServerDatabase, db_id: str, samples: int = 0
) -> tuple[DatabaseSchema, dict[int, list[Any]]]:
    """The schema of `database` under the name `db_id`, and up to `samples` distinct non-null values per column
    (by column index; none when 0). Raises SqltuneError naming the database when it cannot be read."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    if database.dialect == "duckdb":
        return _read_duckdb(database, db_id, samples)
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            schema = _inspect(inspect(conn), db_id, conn.dialect)
            values = _sample(conn, schema, samples) if samples else {}
            conn.rollback()
    except SQLAlchemyError as exc:
        raise SqltuneError(
            f"database {db_id} ({database}): cannot read its schema: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    if not schema.tables:
        raise SqltuneError(f"database {db_id} ({database}) has no tables")
    return schema, values


def _read_duckdb(database: ServerDatabase, db_id: str, samples: int) -> tuple[DatabaseSchema, dict[int, list[Any]]]:
    import duckdb

    from sqltune.sql.location import url_database
    from sqltune.sql.server import sqlite_value

    try:
        with duckdb.connect(url_database(database.url), read_only=True) as conn:
            where = "schema_name = 'main' AND database_name = current_database()"
            rows = conn.execute(
                f"SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE {where} "
                "ORDER BY table_name, column_index"
            ).fetchall()
            constraints = conn.execute(
                "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
                f"referenced_column_names FROM duckdb_constraints() WHERE {where} "
                "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"
            ).fetchall()
            tables = sorted({table for table, _, _ in rows})
            columns = [Column(-1, "*", "*", "text")]
            index: dict[tuple[str, str], int] = {}
            for table, name, kind in rows:
                index[table, name] = len(columns)
                columns.append(Column(tables.index(table), name, _natural(name), kind.lower()))
            primary = [
                tuple(index[t, c] for c in names) for t, kind, names, _, _ in constraints if kind == "PRIMARY KEY"
            ]
            foreign = [
                (index[t, a], index[ref, b])
                for t, kind, names, ref, ref_names in constraints
                if kind == "FOREIGN KEY"
                for a, b in zip(names, ref_names, strict=True)
                if (ref, b) in index
            ]
            values: dict[int, list[Any]] = {}
            for i, column in enumerate(columns[1:], 1) if samples else ():
                name, table = _quoted(column.name), _quoted(tables[column.table])
                query = f"SELECT DISTINCT {name} FROM {table} WHERE {name} IS NOT NULL LIMIT {int(samples)}"
                values[i] = [sqlite_value(row[0]) for row in conn.execute(query).fetchall()]
    except duckdb.Error as exc:
        raise SqltuneError(f"database {db_id} ({database}): cannot read its schema: {exc}") from None
    if not tables:
        raise SqltuneError(f"database {db_id} ({database}) has no tables")
    natural = tuple(_natural(t) for t in tables)
    schema = DatabaseSchema(db_id, tuple(tables), natural, tuple(columns), tuple(primary), tuple(foreign))
    return schema, values


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _inspect(inspector: Any, db_id: str, dialect: Any) -> DatabaseSchema:
    tables = sorted(inspector.get_table_names())
    columns = [Column(-1, "*", "*", "text")]
    index: dict[tuple[str, str], int] = {}
    primary_keys = []
    for number, table in enumerate(tables):
        for column in inspector.get_columns(table):
            index[table, column["name"]] = len(columns)
            columns.append(
                Column(number, column["name"], _natural(column["name"]), _type_name(column["type"], dialect))
            )
        key = inspector.get_pk_constraint(table).get("constrained_columns") or []
        if key:
            primary_keys.append(tuple(index[table, name] for name in key))
    foreign_keys = []
    for table in tables:
        for key in inspector.get_foreign_keys(table):
            for source, target in zip(key["constrained_columns"], key["referred_columns"], strict=True):
                if (key["referred_table"], target) in index:
                    foreign_keys.append((index[table, source], index[key["referred_table"], target]))
    natural = tuple(_natural(t) for t in tables)
    return DatabaseSchema(db_id, tuple(tables), natural, tuple(columns), tuple(primary_keys), tuple(foreign_keys))


def _sample(conn: Any, schema: DatabaseSchema, limit: int) -> dict[int, list[Any]]:
    from sqlalchemy import column, select, table, text

    from sqltune.sql.server import sqlite_value

    if conn.dialect.name == "postgresql":
        conn.execute(text("SET TRANSACTION READ ONLY"))
    values: dict[int, list[Any]] = {}
    for number, name in enumerate(schema.tables):
        for i in schema.table_columns(number):
            col = column(schema.columns[i].name)
            query = select(col).select_from(table(name)).where(col.is_not(None)).distinct().limit(limit)
            values[i] = [sqlite_value(row[0]) for row in conn.execute(query)]
    return values
