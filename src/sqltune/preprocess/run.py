"""The preprocess step's library entry: a dataset split in, a records artifact (and a databases artifact) out."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqltune.artifacts import artifact_dir, atomic_write_json, check_output, write_jsonl
from sqltune.datasets import Example, Layout, read_dataset, read_json
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.preprocess import schema_units
from sqltune.preprocess.config import PreprocessConfig
from sqltune.preprocess.schema_text import serialize_schema
from sqltune.preprocess.target import Target
from sqltune.prompt import build_prompt
from sqltune.sql.schema import DatabaseSchema, load_tables
from sqltune.uri import localize

log = get_logger(__name__)

RECORDS = "records.jsonl"
DROPPED = "dropped.jsonl"  # the questions a dialect or a live database left out, with the reason
# Spider's hardness applies to every dataset but BIRD, which ships its own `difficulty`.
_SPIDER_FAMILY = ("spider", "cosql", "sparc", "wikisql", "jsonl")


def db_file(database_dir: Path, db_id: str) -> Path:
    """Where Spider and BIRD keep a database (and where the databases artifact puts it)."""
    return database_dir / db_id / f"{db_id}.sqlite"


def _check_db_ids(examples: list[Example], schemas: dict[str, DatabaseSchema], tables_file: object) -> None:
    for example in examples:
        if example.db_id not in schemas:
            raise SqltuneError(f"record {example.id}: db_id {example.db_id!r} is not in {tables_file}")


def make_record(
    example: Example, schema_text: str, template: str, dataset: str, hardness: str | None, dialect: str = "sqlite"
) -> dict[str, Any]:
    """One record per the artifact contract; the prompt comes from the one shared `build_prompt`. A dialect other
    than SQLite is named in the record (`dialect`), so every step that rebuilds the prompt names it too."""
    record: dict[str, Any] = {"id": example.id, "db_id": example.db_id, "question": example.question}
    if dataset == "bird" or example.evidence:
        record["evidence"] = example.evidence
    if example.turn is not None:
        record["turn"] = example.turn
        record["history"] = list(example.history)
    if dialect != "sqlite":
        record["dialect"] = dialect
    record["schema"] = schema_text
    record["prompt"] = build_prompt(record, template).text
    record["sql"] = example.sql
    if dataset == "bird":
        record["difficulty"] = example.difficulty
    else:
        record["hardness"] = hardness
    return record


def _hardness_function(dataset: str) -> Callable[[str, DatabaseSchema], str | None] | None:
    """Spider's classifier for Spider-family datasets; a gold query the official parser rejects gets None."""
    if dataset not in _SPIDER_FAMILY:
        return None
    from sqltune.sql.hardness import classify_hardness
    from sqltune.sql.parser import SqlParseError

    def classify(sql: str, schema: DatabaseSchema) -> str | None:
        try:
            return classify_hardness(sql, schema)
        except SqlParseError as exc:
            log.debug("no hardness for %r on %s: %s", sql, schema.db_id, exc)
            return None

    return classify


def build_records(
    dataset: str,
    layout: Layout,
    examples: list[Example],
    schemas: dict[str, DatabaseSchema],
    schema_style: str,
    template: str,
    *,
    dialect: str = "sqlite",
    target: Target | None = None,
    question_schemas: schema_units.QuestionSchemas | None = None,
) -> list[dict[str, Any]]:
    """Records for `examples`: each database's schema text is built once and shared by its questions; with
    `question_schemas` (a schema filter or values), each question gets its own schema units.

    With `target` (a dialect other than SQLite, or a live database) the examples' SQL is the target's, the hardness
    is classified on the original SQL against the source's schema, and sample values come from the live database.
    """
    db_ids = sorted({example.db_id for example in examples})
    texts = {}
    for db_id in progress(db_ids, desc=f"{schema_style} schemas", unit="db"):
        if target is not None and target.samples is not None:
            texts[db_id] = serialize_schema(schemas[db_id], schema_style, samples=target.samples.get(db_id, {}))
        else:
            path = db_file(layout.database_dir, db_id) if layout.database_dir else None
            texts[db_id] = serialize_schema(schemas[db_id], schema_style, path)
    classify = _hardness_function(dataset)
    records = []
    for example in progress(examples, desc="records", unit="rec"):
        hardness = None
        if classify and target is not None:
            sql, schema = target.hardness_input(example)
            hardness = classify(sql, schema) if sql is not None else None
        elif classify:
            hardness = classify(example.sql, schemas[example.db_id])
        if question_schemas is None:
            records.append(make_record(example, texts[example.db_id], template, dataset, hardness, dialect))
            continue
        words = schema_units.ranking_words(example.question, example.evidence)
        filtered = question_schemas(example.db_id, words, example.sql)
        records.append(make_record(example, filtered.text, template, dataset, hardness, dialect))
        schema_units.add_to_record(records[-1], filtered)
    return records


def _lineage(layout: Layout, tables: Path | None = None) -> dict[str, Path]:
    """The files a split is read from, recorded by content in both artifacts' manifests."""
    files = {f"questions_{i}" if i else "questions": path for i, path in enumerate(layout.question_files)}
    tables = tables or layout.tables_file
    return {**files, "tables": tables} if tables else files


def write_databases(
    out: str | os.PathLike[str],
    layout: Layout,
    db_ids: list[str],
    missing: list[str],
    parameters: dict[str, Any],
    *,
    overwrite: bool = False,
    schemas: dict[str, DatabaseSchema] | None = None,
    tables: Path | None = None,
    files: bool = True,
) -> None:
    """The databases artifact, Spider layout: `tables.json` (the split's entries), `database/<db>/<db>.sqlite`.

    `schemas` (read from a live database, or a dataset's own format) are written as tables.json entries; else the
    split's tables.json entries are copied as they are. A dataset that builds its SQLite files (WikiSQL) builds them
    here. Without `files` (the databases are on a server) the artifact holds tables.json alone."""
    wanted = set(db_ids)
    if schemas is None:
        assert layout.tables_file is not None
        entries = [entry for entry in read_json(layout.tables_file) if entry.get("db_id") in wanted]
    else:
        entries = [schemas[db_id].to_json() for db_id in db_ids]
    extra = {"databases": db_ids, "missing_databases": missing}
    with artifact_dir(
        out,
        "databases",
        parameters=parameters,
        inputs=_lineage(layout, tables),
        extra=extra,
        overwrite=overwrite,
        option="--databases-out",
    ) as tmp:
        atomic_write_json(tmp / "tables.json", entries)
        (tmp / "database").mkdir()
        for db_id in progress(db_ids if files else [], desc="databases", unit="db"):
            if db_id in missing:
                continue
            target = db_file(tmp / "database", db_id)
            if layout.write_database is not None:
                layout.write_database(db_id, target)
            else:
                assert layout.database_dir is not None
                target.parent.mkdir(parents=True)
                shutil.copyfile(db_file(layout.database_dir, db_id), target)


def _schemas(
    config: PreprocessConfig, layout: Layout, db_ids: list[str], tables: Path | None
) -> tuple[dict[str, DatabaseSchema], dict[str, DatabaseSchema] | None, str]:
    """(the schemas the prompts describe, the source's own schemas (None: none), where the first come from)."""
    own = layout.schemas
    if own is None and layout.tables_file is not None:
        if not layout.tables_file.is_file() and config.dataset != "jsonl":
            raise SqltuneError(f"schema file not found: {layout.tables_file}")
        own = load_tables(layout.tables_file) if layout.tables_file.is_file() else None
    if tables is not None:
        return load_tables(tables), own, str(tables)
    if config.database_url:
        return {}, own, "the live database"  # read per database by Target
    if own is None:
        raise SqltuneError(
            f"{layout.question_files[0]}: no schema for these questions: pass --tables (a tables.json) or "
            "--database-url (read the schemas from the live database), or put a tables.json beside them"
        )
    return own, own, str(layout.tables_file or layout.question_files[0])


def preprocess(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: PreprocessConfig | None = None,
    databases_out: str | os.PathLike[str] | None = None,
    endpoint_url: str | None = None,
    overwrite: bool = False,
    tables: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Preprocess one split of a dataset into `out/records.jsonl` (+ manifest); returns the manifest's summary.

    `source` is a local directory or an s3:// prefix in the dataset's layout (for jsonl also a file). With
    `databases_out`, the SQLite files the split needs are copied there too (with tables.json). Both artifacts
    appear only when everything worked. Databases whose SQLite file is missing are logged and listed in the
    manifests, not an error: their records still serve exact-match evaluation. An existing output is replaced only
    when it is an sqltune artifact or `overwrite` is set; an output inside the source (or the other output) is
    refused. `tables` (a tables.json) gives the schemas instead of the dataset's own or the live database's.

    With `config.dialect` other than SQLite, or `config.database_url`, the gold SQL is transpiled to the dialect and
    run on the database; a query that cannot be is dropped, with its reason in `dropped.jsonl` and the summary.
    """
    config = config or PreprocessConfig()
    dataset, split, schema_style, template = config.dataset, config.split, config.schema_style, config.prompt_template
    root = localize(source, what=f"{dataset} source", endpoint_url=endpoint_url)
    tables_path = Path(tables) if tables is not None else None
    check_output(out, inputs=[root, tables_path], overwrite=overwrite)
    if databases_out:
        check_output(databases_out, inputs=[root, tables_path], overwrite=overwrite, option="--databases-out")
        out_path, db_path = Path(out).resolve(), Path(databases_out).resolve()
        if out_path == db_path or out_path in db_path.parents or db_path in out_path.parents:
            raise SqltuneError(f"--out {out} and --databases-out {databases_out} must be different directories")
    layout = read_dataset(dataset, root, split)
    examples = layout.examples[: config.limit] if config.limit else layout.examples
    db_ids = sorted({example.db_id for example in examples})
    schemas, own, schema_origin = _schemas(config, layout, db_ids, tables_path)
    target, dropped = None, []
    if config.dialect != "sqlite" or config.database_url:
        target = Target(config, own, schemas, schema_style == "rich")
        schemas = target.read_schemas(db_ids)
        examples, dropped = target.convert(examples)
        if not examples:
            first = dropped[0]
            raise SqltuneError(
                f"every one of the {len(dropped)} questions was dropped; the first, {first['id']}: "
                f"{first['category']}: {first['reason']}"
            )
    _check_db_ids(examples, schemas, schema_origin)

    builds = layout.write_database is not None
    database_dir = layout.database_dir
    # Values are read from the SQLite files (a live database gives the rich style's samples, not the filter's values).
    needs_files = (
        bool((schema_style == "rich" or databases_out) and not config.database_url) or config.schema_values > 0
    )
    if needs_files and not builds and (database_dir is None or not database_dir.is_dir()):
        why = " (schema_values reads cell values from the SQLite files)" if config.schema_values else ""
        raise SqltuneError(f"database directory not found: {database_dir or root}{why}")
    if builds or config.database_url:  # built here, or on the database server: no SQLite file to miss
        missing = []
    elif database_dir is None:
        missing = list(db_ids)
    else:
        missing = [db_id for db_id in db_ids if not db_file(database_dir, db_id).is_file()]
    if missing:
        log.warning("%d of %d databases have no SQLite file: %s", len(missing), len(db_ids), ", ".join(missing))
    if databases_out and missing and len(missing) == len(db_ids):
        raise SqltuneError(f"none of the {len(db_ids)} databases the split needs is in {database_dir}")

    question_schemas = None
    if config.schema_filter != schema_units.DEFAULT_FILTER or config.schema_values:
        question_schemas = schema_units.QuestionSchemas(
            schemas, schema_style, lambda db_id: db_file(database_dir, db_id) if database_dir else None,
            schema_filter=config.schema_filter, values=config.schema_values, keep_gold=split == "train",
            dialect=config.dialect,
        )  # fmt: skip
    records = build_records(
        dataset, layout, examples, schemas, schema_style, template, dialect=config.dialect, target=target,
        question_schemas=question_schemas,
    )  # fmt: skip
    label = "difficulty" if dataset == "bird" else "hardness"
    labels = Counter(str(record[label]) if record[label] else "unknown" for record in records)
    parameters = {**config.to_dict(), "source": str(source)}
    summary: dict[str, Any] = {
        "records": len(records),
        label: dict(sorted(labels.items())),
        "missing_databases": missing,
    }
    if target is not None:
        summary["dropped"] = {"total": len(dropped), **Counter(d["category"] for d in dropped)}
    if question_schemas is not None:
        summary["schema_filter"] = schema_units.summary(records)
        log.info("schema filter %s: %s", config.schema_filter, summary["schema_filter"])
    inputs = _lineage(layout, tables_path)
    with artifact_dir(out, "records", parameters=parameters, inputs=inputs, extra=summary, overwrite=overwrite) as tmp:
        write_jsonl(tmp / RECORDS, records)
        if target is not None:
            write_jsonl(tmp / DROPPED, dropped)
        if databases_out:
            written = None if (own is schemas and layout.schemas is None and tables_path is None) else schemas
            write_databases(
                databases_out, layout, db_ids, missing, parameters, overwrite=overwrite, schemas=written,
                tables=tables_path, files=not config.database_url,
            )  # fmt: skip
    log.info("wrote %d %s %s records to %s (%s)", len(records), dataset, split, out, summary[label])
    if dropped:
        log.info("dropped %d questions: %s", len(dropped), dict(Counter(d["category"] for d in dropped)))
    return summary
