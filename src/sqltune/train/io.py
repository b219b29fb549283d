"""What every training recipe reads and writes: the run's inputs (`TrainInputs`), the training records and the
adapter artifact."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqltune.artifacts import MANIFEST, artifact_dir, atomic_write_json, read_jsonl, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.train.config import TrainConfig
from sqltune.train.plot import write_loss_curve
from sqltune.uri import is_s3, join, localize, upload_dir

log = get_logger(__name__)

RECORDS = "records.jsonl"


@dataclass(frozen=True)
class TrainInputs:
    """What one training run reads and where it writes, each local or s3://: the `sqltune train` arguments that
    are not settings (those are the TrainConfig)."""

    data: str | os.PathLike[str]  # a records JSONL file or a preprocess artifact directory
    base_model: str  # any spec `sqltune.models.resolve_base_model` takes
    out: str | os.PathLike[str]  # the adapter artifact
    checkpoint_dir: str | None = None  # checkpoints every checkpoint_every steps; a rerun resumes from them
    endpoint_url: str | None = None  # the S3 endpoint (default: AWS_ENDPOINT_URL)
    overwrite: bool = False  # replace an `out` that is not an sqltune artifact
    init_adapter: str | os.PathLike[str] | None = None  # GRPO: the SFT adapter it continues
    db_dir: str | os.PathLike[str] | None = None  # GRPO: the databases (<db_id>/<db_id>.sqlite) the reward runs on

    def argv(self, config: TrainConfig) -> list[str]:
        """The `sqltune train` arguments of this run: what the launcher's workers and a TrainJob's pods run.

        A database URL's password never goes into them (a process list, a TrainJob's spec): it moves to
        $SQLTUNE_DATABASE_PASSWORD, which the workers inherit and a URL without a password takes."""
        from sqltune.settings import config_args
        from sqltune.sql.location import PASSWORD_ENV, split_password

        if config.database_url:
            url, password = split_password(config.database_url)
            if password:
                os.environ[PASSWORD_ENV] = password
                config = replace(config, database_url=url)

        argv = ["train", "--data", str(self.data), "--base-model", self.base_model, "--out", str(self.out)]
        argv += ["--overwrite"] if self.overwrite else []
        argv += ["--checkpoint-dir", self.checkpoint_dir] if self.checkpoint_dir else []
        argv += ["--endpoint-url", self.endpoint_url] if self.endpoint_url else []
        argv += ["--init-adapter", str(self.init_adapter)] if self.init_adapter else []
        argv += ["--db-dir", str(self.db_dir)] if self.db_dir else []
        return argv + config_args(config)

    def lineage(self) -> dict[str, Any]:
        """The inputs the adapter's manifest records: the data, and what GRPO continued and ran SQL on."""
        given = {"data": self.data, "init_adapter": self.init_adapter, "db_dir": self.db_dir}
        return {name: value for name, value in given.items() if name == "data" or value}


# The preprocess settings that shape a record's schema text: what predict and the server must ask the adapter with.
PROMPT_SETTINGS = ("schema_style", "schema_filter", "schema_values", "dialect")


def data_prompt_settings(data: str | os.PathLike[str], endpoint_url: str | None) -> dict[str, Any]:
    """The PROMPT_SETTINGS of the training records, from their preprocess artifact's manifest (none for a bare JSONL
    file): the adapter records them, so the server builds its prompts the way the model learned them."""
    path = localize(data, "train data", endpoint_url)
    manifest = (path if path.is_dir() else path.parent) / MANIFEST
    try:
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict) or found.get("kind") != "records" or not isinstance(found.get("parameters"), dict):
        return {}
    return {name: found["parameters"][name] for name in PROMPT_SETTINGS if name in found["parameters"]}


def read_records(data: str | os.PathLike[str], endpoint_url: str | None) -> list[dict[str, Any]]:
    path, source = localize(data, "train data", endpoint_url), str(data)
    if path.is_dir():
        path, source = path / RECORDS, join(source, RECORDS)
        if not path.is_file():
            raise SqltuneError(f"train data {data}: directory has no {RECORDS}")
    records = read_jsonl(path)
    if not records:
        raise SqltuneError(f"train data {data} is empty: no records to train on")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise SqltuneError(
                f"train data {source}:{_line_of_row(path, index)}: a record must be a JSON object, "
                f"not {type(record).__name__} {json.dumps(record)[:80]}"
            )
    return records


def _line_of_row(path: Path, index: int) -> int:
    """The line number of the `index`-th row `read_jsonl` returned (it skips blank lines)."""
    with open(path, encoding="utf-8") as handle:
        rows = (lineno for lineno, line in enumerate(handle, 1) if line.strip())
        return next(itertools.islice(rows, index, None))


def write_adapter(
    inputs: TrainInputs, config: TrainConfig, *, model: Any, tokenizer: Any, metrics: dict[str, Any],
    rows: list[dict[str, Any]], save: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """The adapter artifact in `inputs.out` (`save` goes to PEFT's `save_pretrained`); an s3:// `out` (a Kubeflow
    TrainJob's) is built locally, then uploaded."""
    out = inputs.out
    if is_s3(out):
        with tempfile.TemporaryDirectory(prefix="sqltune-adapter-") as scratch:
            local = replace(inputs, out=Path(scratch) / "adapter", overwrite=False)
            write_adapter(local, config, model=model, tokenizer=tokenizer, metrics=metrics, rows=rows, save=save)
            upload_dir(local.out, str(out), inputs.endpoint_url)
        log.info("adapter uploaded to %s", out)
        return
    base_model = inputs.base_model
    parameters = {
        "base_model": base_model,
        **data_prompt_settings(inputs.data, inputs.endpoint_url),
        **config.to_dict(),
    }
    with artifact_dir(
        out, "adapter", parameters=parameters, inputs=inputs.lineage(), extra={"metrics": metrics},
        overwrite=inputs.overwrite,
    ) as tmp:  # fmt: skip
        model.save_pretrained(tmp, **(save or {}))
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "train_metrics.json", metrics)
        write_jsonl(tmp / "train_log.jsonl", rows)
        if rows:
            title = f"{config.method} on {base_model}: {len(rows)} steps, final loss {rows[-1]['loss']:.4f}"
            write_loss_curve(rows, tmp / "loss_curve.png", tmp / "loss_curve.html", title)
        # PEFT records the base model by its local cache path; record the spec the user gave instead.
        adapter_config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        atomic_write_json(tmp / "adapter_config.json", adapter_config)
    log.info("adapter written to %s (%d steps, final loss %s)", out, metrics["steps"], metrics["final_loss"])
