"""The predict component: batched SQL generation for the eval records (greedy, or voted among candidates)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from sqltune.images import image_for


@dsl.component(base_image=image_for("predict"), install_kfp_package=False)
def predict(
    eval_data: Input[Dataset],
    databases: Input[Dataset],
    base_model: str,
    prompt_template: str,
    max_seq_len: int,
    backend: str,
    batch_size: int,
    max_new_tokens: int,
    candidates: int,
    database_url: str,
    predict_options: dict,
    predictions: Output[Dataset],
    adapter: Input[Model] = None,
):
    """Generate one SQL query per eval record, with the fine-tuned adapter or (without one) the base model; with
    several candidates, each runs against the eval split's `databases` and the one most agree with is chosen.

    Each parameter is the PredictConfig setting of the same name; `predict_options` sets the rarely changed ones.

    Args:
        eval_data: The dev records from preprocess.
        databases: The dev split's databases, where candidates run (unless database_url names where they are).
        base_model: The base model the adapter was trained on (or the one to score alone).
        predictions: predictions.jsonl (one SQL per record, with candidates when there are several) and metrics.
        adapter: The fine-tuned adapter; without one the base model predicts alone.
    """
    from pathlib import Path

    from sqltune.predict import PredictConfig
    from sqltune.predict import predict as run_predict
    from sqltune.settings import build_config

    summary = run_predict(
        data=Path(eval_data.path) / "records.jsonl",
        base_model=base_model,
        adapter=Path(adapter.path) if adapter is not None else None,
        out=predictions.path,
        config=build_config(PredictConfig, locals(), predict_options, "predict_options"),
        db_dir=Path(databases.path) / "database",
    )
    predictions.metadata.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
