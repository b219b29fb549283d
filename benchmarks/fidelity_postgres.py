"""How often Spider's gold SQL, transpiled for PostgreSQL, gives on PostgreSQL the result the original gives on SQLite
(or on DuckDB, with a duckdb:// --database-url).

The dev databases (all that have a SQLite file, or --db-id's) are copied with `copy-db` into a PostgreSQL server
(an embedded one this script starts, or --database-url), each dev question's gold is transpiled as preprocess
--dialect postgres does, both run in sqltune's sandboxes, and the two results are compared by the official EX rule
(rows as a bag, in order when the gold orders them, columns in any order). Every question lands in one category;
the figures and the categories' examples go to benchmarks/results/fidelity-postgres.{md,json}.

    .venv/bin/python benchmarks/fidelity_postgres.py [--data ../shared/data] [--db-id concert_singer,pets_1,car_1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import sqlglot

from sqltune.sql.copy import copy_databases
from sqltune.sql.embedded import start_server
from sqltune.sql.execution import Executor, Limits, QueryError, results_match
from sqltune.sql.location import Databases
from sqltune.sql.schema import load_tables
from sqltune.sql.transpile import TranspileError, transpile

RESULTS = Path(__file__).resolve().parent / "results"


def _rounded(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def _unlimited(sql: str, dialect: str) -> str | None:
    tree = sqlglot.parse_one(sql, read=dialect)
    if tree.args.get("limit") is None:
        return None
    tree.set("limit", None)
    return tree.sql(dialect=dialect)


def _why_different(gold: str, pg_sql: str, lite: list[tuple], pg: list[tuple], run: Any, dialect: str) -> str:
    """Why two results differ, checked where it can be: the same rows once LIMIT is gone (the two engines keep
    different ones of tied rows), the same rows in another order (ties), or rounding."""
    order = "order by" in gold.lower()
    if results_match(_rounded(lite), _rounded(pg), order):
        return "floating-point rounding"
    if order and results_match(lite, pg, False):
        return "ORDER BY leaves ties (or NULLs) in another order"
    whole_lite, whole_pg = _unlimited(gold, "sqlite"), _unlimited(pg_sql, dialect)
    if whole_lite and whole_pg:
        try:
            if results_match(run("sqlite", whole_lite), run("postgres", whole_pg), False):
                return "LIMIT keeps other rows of the same rank (ties), or no ORDER BY"
        except QueryError:
            pass
    if "any_value" in pg_sql.lower():
        return "a bare column: SQLite takes the row of the MAX/MIN, ANY_VALUE any row"
    return "other"


def _category(error: QueryError, engine: str = "PostgreSQL") -> str:
    message = str(error)
    match = re.match(r"(\w+): (.*)", message)
    kind, detail = (match.group(1), match.group(2)) if match else (error.category, message)
    if "operator does not exist" in detail or "could not identify" in detail:
        detail = "an operator between mismatched types (" + detail.split("operator does not exist: ")[-1] + ")"
    elif "must appear in the GROUP BY clause" in detail:
        detail = "a column neither grouped nor aggregated (SQLite allows it)"
    elif "function" in detail and "(text) does not exist" in detail:
        detail = "numbers stored as text, aggregated: " + detail.split("function ")[-1].split(" does")[0]
    elif "function" in detail and "does not exist" in detail:
        detail = "a function PostgreSQL lacks: " + detail.split("function ")[-1].split("(")[0]
    return f"fails on {engine}: {kind}: {detail}"[:160]


def measure(data: Path, db_ids: list[str], url: str) -> dict:
    spider = data / "spider"
    questions = json.loads((spider / "dev.json").read_text())
    schemas = load_tables(spider / "tables.json")
    present = {d for d in {q["db_id"] for q in questions} if (spider / "database" / d / f"{d}.sqlite").is_file()}
    wanted = sorted(present & set(db_ids)) if db_ids else sorted(present)
    copy_databases(spider / "database", url, wanted, overwrite=True)
    target = Databases(url=url)
    dialect = target.dialect
    executor = Executor(Limits(timeout_s=10))
    categories: Counter[str] = Counter()
    examples: dict[str, list[dict]] = defaultdict(list)
    chosen = [q for q in questions if q["db_id"] in wanted]
    for q in chosen:
        db, gold = q["db_id"], q["query"]
        sqlite_file = spider / "database" / db / f"{db}.sqlite"
        try:
            pg_sql = transpile(gold, dialect, schema=schemas[db])
            lite = executor.run(sqlite_file, gold)[0]
        except TranspileError as exc:
            category, pg_sql = f"does not transpile: {exc}"[:160], None
        except QueryError as exc:
            category = f"fails on SQLite: {exc.category}"
        else:
            try:
                pg = executor.run(target.server(db), pg_sql)[0]
            except QueryError as exc:
                category = _category(exc, dialect)
            else:
                same = results_match(lite, pg, "order by" in gold.lower())

                def run(engine: str, sql: str, db: str = db, sqlite_file: Path = sqlite_file) -> list[tuple]:
                    return executor.run(sqlite_file if engine == "sqlite" else target.server(db), sql)[0]

                why = "" if same else _why_different(gold, pg_sql, lite, pg, run, dialect)
                category = "same result" if same else f"different result: {why}"
        categories[category] += 1
        if len(examples[category]) < 3:
            examples[category].append({"db_id": db, "gold": gold, "postgres": pg_sql})
    executor.close()
    same = categories["same result"]
    return {
        "engine": dialect,
        "databases": wanted,
        "questions": len(chosen),
        "same": same,
        "fidelity": round(same / len(chosen), 4) if chosen else None,
        "categories": dict(categories.most_common()),
        "examples": examples,
    }


def _markdown(result: dict) -> str:
    lines = [
        f"# Spider dev gold on {result['engine']} vs SQLite",
        "",
        f"{result['same']} of {result['questions']} questions ({result['fidelity']:.1%}) over "
        f"{len(result['databases'])} databases give the same result on {result['engine']} (gold transpiled by "
        f"`preprocess --dialect {result['engine']}`, databases copied by `copy-db`) as the original gold on SQLite.",
        "",
        "| category | questions |",
        "|---|---|",
        *(f"| {name} | {count} |" for name, count in result["categories"].items()),
        "",
        "Examples of each category other than the same result are in the JSON file beside this one.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--db-id", default="", help="comma-separated databases (default: every dev database)")
    parser.add_argument("--database-url", default="", help="a PostgreSQL URL with {db_id} (default: start one)")
    parser.add_argument("--name", default="fidelity-postgres", help="results file name")
    args = parser.parse_args()
    os.environ.setdefault("SQLTUNE_PROGRESS", "0")
    db_ids = [d for d in args.db_id.split(",") if d]
    if args.database_url:
        result = measure(args.data, db_ids, args.database_url)
    else:
        with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp) / "pg", delete=True) as url:
            result = measure(args.data, db_ids, url)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
