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
from sqltune.prompt import build_prompt
from sqltune.sql.schema import DatabaseSchema, load_tables
from sqltune.uri import localize

log = get_logger(__name__)

RECORDS = "records.jsonl"
# Spider's hardness applies to every dataset over Spider's databases; BIRD ships its own `difficulty`.
_SPIDER_FAMILY = ("spider", "cosql", "sparc")


def db_file(database_dir: Path, db_id: str) -> Path:
    """Where Spider and BIRD keep a database (and where the databases artifact puts it)."""
    return database_dir / db_id / f"{db_id}.sqlite"


def _check_db_ids(examples: list[Example], schemas: dict[str, DatabaseSchema], tables_file: Path) -> None:
    for example in examples:
        if example.db_id not in schemas:
            raise SqltuneError(f"record {example.id}: db_id {example.db_id!r} is not in {tables_file}")


def make_record(
    example: Example, schema_text: str, template: str, dataset: str, hardness: str | None
) -> dict[str, Any]:
    """One record per the artifact contract; the prompt comes from the one shared `build_prompt`."""
    record: dict[str, Any] = {"id": example.id, "db_id": example.db_id, "question": example.question}
    if dataset == "bird":
        record["evidence"] = example.evidence
    if example.turn is not None:
        record["turn"] = example.turn
        record["history"] = list(example.history)
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
    question_schemas: schema_units.QuestionSchemas | None = None,
) -> list[dict[str, Any]]:
    """Records for `examples`: each database's schema text is built once and shared by its questions; with
    `question_schemas` (a schema filter or values), each question gets its own schema units."""
    db_ids = sorted({example.db_id for example in examples})
    texts = {
        db_id: serialize_schema(schemas[db_id], schema_style, db_file(layout.database_dir, db_id))
        for db_id in progress(db_ids, desc=f"{schema_style} schemas", unit="db")
    }
    classify = _hardness_function(dataset)
    records = []
    for example in progress(examples, desc="records", unit="rec"):
        hardness = classify(example.sql, schemas[example.db_id]) if classify else None
        if question_schemas is None:
            records.append(make_record(example, texts[example.db_id], template, dataset, hardness))
            continue
        filtered = question_schemas(example.db_id, example.question, example.sql)
        records.append(make_record(example, filtered.text, template, dataset, hardness))
        schema_units.add_to_record(records[-1], filtered)
    return records


def _lineage(layout: Layout) -> dict[str, Path]:
    """The files a split is read from, recorded by content in both artifacts' manifests."""
    files = {f"questions_{i}" if i else "questions": path for i, path in enumerate(layout.question_files)}
    return {**files, "tables": layout.tables_file}


def write_databases(
    out: str | os.PathLike[str],
    layout: Layout,
    db_ids: list[str],
    missing: list[str],
    parameters: dict[str, Any],
    *,
    overwrite: bool = False,
) -> None:
    """The databases artifact, Spider layout: `tables.json` (the split's entries), `database/<db>/<db>.sqlite`."""
    wanted = set(db_ids)
    entries = [entry for entry in read_json(layout.tables_file) if entry.get("db_id") in wanted]
    extra = {"databases": db_ids, "missing_databases": missing}
    with artifact_dir(
        out,
        "databases",
        parameters=parameters,
        inputs=_lineage(layout),
        extra=extra,
        overwrite=overwrite,
        option="--databases-out",
    ) as tmp:
        atomic_write_json(tmp / "tables.json", entries)
        for db_id in progress(db_ids, desc="databases", unit="db"):
            if db_id not in missing:
                target = db_file(tmp / "database", db_id)
                target.parent.mkdir(parents=True)
                shutil.copyfile(db_file(layout.database_dir, db_id), target)


def preprocess(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: PreprocessConfig | None = None,
    databases_out: str | os.PathLike[str] | None = None,
    endpoint_url: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Preprocess one split of a dataset into `out/records.jsonl` (+ manifest); returns the manifest's summary.

    `source` is a local directory or an s3:// prefix in the dataset's layout. With `databases_out`, the
    SQLite files the split needs are copied there too. Both artifacts appear only when everything worked.
    Databases whose SQLite file is missing are logged and listed in the manifests, not an error: their
    records still serve exact-match evaluation. An existing output is replaced only when it is an sqltune
    artifact or `overwrite` is set; an output inside the source (or the other output) is refused.
    """
    config = config or PreprocessConfig()
    dataset, split, schema_style, template = config.dataset, config.split, config.schema_style, config.prompt_template
    root = localize(source, what=f"{dataset} source", endpoint_url=endpoint_url)
    check_output(out, inputs=[root], overwrite=overwrite)
    if databases_out:
        check_output(databases_out, inputs=[root], overwrite=overwrite, option="--databases-out")
        out_path, db_path = Path(out).resolve(), Path(databases_out).resolve()
        if out_path == db_path or out_path in db_path.parents or db_path in out_path.parents:
            raise SqltuneError(f"--out {out} and --databases-out {databases_out} must be different directories")
    layout = read_dataset(dataset, root, split)
    examples = layout.examples[: config.limit] if config.limit else layout.examples
    schemas = load_tables(layout.tables_file)
    _check_db_ids(examples, schemas, layout.tables_file)

    db_ids = sorted({example.db_id for example in examples})
    if (schema_style == "rich" or config.schema_values or databases_out) and not layout.database_dir.is_dir():
        raise SqltuneError(f"database directory not found: {layout.database_dir}")
    missing = [db_id for db_id in db_ids if not db_file(layout.database_dir, db_id).is_file()]
    if missing:
        log.warning("%d of %d databases have no SQLite file: %s", len(missing), len(db_ids), ", ".join(missing))
    if databases_out and len(missing) == len(db_ids):
        raise SqltuneError(f"none of the {len(db_ids)} databases the split needs is in {layout.database_dir}")

    question_schemas = None
    if config.schema_filter != schema_units.DEFAULT_FILTER or config.schema_values:
        question_schemas = schema_units.QuestionSchemas(
            schemas, schema_style, lambda db_id: db_file(layout.database_dir, db_id),
            schema_filter=config.schema_filter, values=config.schema_values, keep_gold=split == "train",
        )  # fmt: skip
    records = build_records(dataset, layout, examples, schemas, schema_style, template, question_schemas)
    label = "difficulty" if dataset == "bird" else "hardness"
    labels = Counter(str(record[label]) if record[label] else "unknown" for record in records)
    parameters = {**config.to_dict(), "source": str(source)}
    summary = {"records": len(records), label: dict(sorted(labels.items())), "missing_databases": missing}
    if question_schemas is not None:
        summary["schema_filter"] = schema_units.summary(records)
        log.info("schema filter %s: %s", config.schema_filter, summary["schema_filter"])
    inputs = _lineage(layout)
    with artifact_dir(out, "records", parameters=parameters, inputs=inputs, extra=summary, overwrite=overwrite) as tmp:
        write_jsonl(tmp / RECORDS, records)
        if databases_out:
            write_databases(databases_out, layout, db_ids, missing, parameters, overwrite=overwrite)
    log.info("wrote %d %s %s records to %s (%s)", len(records), dataset, split, out, summary[label])
    return summary
