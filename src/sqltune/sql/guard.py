"""What untrusted SQL may be before it reaches a database server: one read-only query and allow-listed functions.

A read-only transaction alone does not make a server safe: a superuser (the default user of many a development
server) can `COPY ... TO` a file, read one with `pg_read_file`, `SET ROLE`, `ALTER SYSTEM`, and a read-only
transaction does not stop `pg_sleep`, `dblink`, `lo_export` or `query_to_xml('<any statement>')`. So before a query
is sent, `check_query` parses it with sqlglot in the server's dialect (its nesting bounded first,
`sqltune.sql.depth`) and accepts exactly one SELECT (with WITH, set operations and subqueries) that:

- contains no statement inside it (no data-modifying CTE, no `SELECT ... INTO`, no `FOR UPDATE`);
- calls only allow-listed functions (`allowed_functions`: SQLite's own list, `execution.ALLOWED_FUNCTIONS`, plus
  the engine's ordinary aggregate, string, math, date and JSON functions; no file, server, session, sequence,
  lock, sleep or query-running function);
- reads no system catalog (`pg_*`, `information_schema`, `duckdb_*`) and no file as a table.

The sandbox then runs it in a read-only transaction with a statement timeout (`sqltune.sql.server`), and a
least-privilege role (SELECT only) is the third wall; the docs say how to make one.

A typed sqlglot function is named as the dialect writes it (`StrPosition` is `strpos` or `position`); a name
sqlglot does not know is taken as written. Either must be on the list.
"""

from __future__ import annotations

import logging
import re

import sqlglot
from sqlglot import exp

from sqltune.sql.depth import SqlTooDeep, bounded, check_depth
from sqltune.sql.limits import ALLOWED_FUNCTIONS, QueryError

_COMMON = """
    abs acos any_value asin atan atan2 avg bit_and bit_or bool_and bool_or cbrt ceil ceiling char_length
    character_length chr
    coalesce concat concat_ws corr cos cot count covar_pop covar_samp cume_dist date_part date_trunc degrees
    dense_rank div every exp first_value floor format greatest initcap lag last_value lead least left length ln log
    log10 lower lpad ltrim max md5 min mod nth_value ntile nullif octet_length percent_rank percentile_cont
    percentile_disc pi position power radians random rank regexp_replace regexp_matches repeat replace reverse right
    round row_number rpad rtrim sign sin split_part sqrt stddev stddev_pop stddev_samp string_agg strpos substr
    substring sum tan to_char trim trunc upper var_pop var_samp variance array_agg array_length unnest mode
    cast try_cast extract if case nvl ifnull
    json_agg json_build_object json_extract_path json_extract_path_text jsonb_extract_path_text to_json
"""
_DIALECT_FUNCTIONS = {
    "postgres": """
        age btrim current_date current_time current_timestamp date_bin generate_series isfinite justify_days
        justify_hours justify_interval localtime localtimestamp make_date make_interval make_time make_timestamp
        now num_nonnulls num_nulls scale regexp_count regexp_like regexp_substr regexp_split_to_array
        regexp_split_to_table starts_with string_to_array to_date to_number to_timestamp translate width_bucket
        array_to_string array_position cardinality jsonb_build_object jsonb_agg row_to_json
    """,
    "duckdb": """
        any_value arg_max arg_min array_to_string contains current_date current_time current_timestamp
        date_diff datediff day dayname dayofweek dayofyear epoch epoch_ms generate_series hour ilike_escape
        instr list list_aggregate list_contains list_distinct list_sort list_value median minute month monthname
        now quarter range regexp_extract regexp_full_match regexp_matches second starts_with strftime strptime
        string_split struct_pack to_timestamp today week year yearweek ends_with prefix suffix len array_length
        date_add date_sub make_date make_time make_timestamp last_day least greatest hash
    """,
}
# sqlglot logs a warning for each statement it reads as a raw Command (`SET ROLE x`); here that is a refusal.
logging.getLogger("sqlglot").setLevel(logging.ERROR)
_SYSTEM_TABLE = re.compile(r"^(pg_|duckdb_|sqlite_)", re.IGNORECASE)
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast", "system", "temp"}
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_$]*)\s*\(")
# Nodes that are statements or side effects however deep they sit in a query.
_STATEMENTS = (exp.DML, exp.DDL, exp.Command, exp.Copy, exp.Set, exp.Into, exp.Lock, exp.Transaction)


def allowed_functions(dialect: str) -> frozenset[str]:
    """The functions a query may call on an engine of `dialect` (lower-case names)."""
    extra = _DIALECT_FUNCTIONS.get(dialect, "")
    return ALLOWED_FUNCTIONS | frozenset(_COMMON.split()) | frozenset(extra.split())


def function_name(node: exp.Func, dialect: str) -> str | None:
    """The name the engine is asked to call for a function node; None for syntax (CASE, `::`, operators)."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Cast | exp.TryCast | exp.Case | exp.If | exp.Extract | exp.Coalesce):
        return None  # SQL syntax; their operands are checked as nodes of their own
    match = _CALL.match(node.sql(dialect=dialect))
    return match.group(1).lower() if match else None


def check_query(sql: str, dialect: str) -> exp.Query:
    """The parsed query when `sql` is one read-only query calling allow-listed functions only; else QueryError
    ("syntax error" when it does not parse, "execution error" naming what is refused)."""
    try:
        check_depth(sql)
        with bounded():
            return _checked(sql, dialect)
    except SqlTooDeep as exc:
        raise QueryError("execution error", str(exc)) from None


def _checked(sql: str, dialect: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError("syntax error", f"does not parse as {dialect} SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        kinds = ", ".join(type(s).__name__ for s in statements) or "nothing"
        raise QueryError("execution error", f"not allowed in the sandbox: one SELECT query only, got {kinds}")
    query = statements[0]
    allowed = allowed_functions(dialect)
    for node in query.walk():
        if isinstance(node, _STATEMENTS):
            what = node.key.upper() if not isinstance(node, exp.Into) else "SELECT ... INTO"
            raise QueryError("execution error", f"not allowed in the sandbox: {what} inside a query")
        if isinstance(node, exp.Func):
            name = function_name(node, dialect)
            if name is not None and name not in allowed:
                raise QueryError("execution error", f"function {name}() is not allowed in the sandbox")
        elif isinstance(node, exp.Table):
            _check_table(node)
    return query


def _check_table(table: exp.Table) -> None:
    if isinstance(table.this, exp.Literal):
        raise QueryError("execution error", f"not allowed in the sandbox: a file as a table ({table.this.sql()})")
    schema = (table.db or "").lower()
    if schema in _SYSTEM_SCHEMAS or (table.name and _SYSTEM_TABLE.match(table.name)):
        name = f"{table.db}.{table.name}" if table.db else table.name
        raise QueryError("execution error", f"not allowed in the sandbox: system catalog {name}")
