"""The evaluate component: EX and EM per hardness, shown in the Kubeflow UI as metrics and a report."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from sqltune.images import image_for


@dsl.component(base_image=image_for("evaluate"), install_kfp_package=False)
def evaluate(
    eval_data: Input[Dataset],
    predictions: Input[Dataset],
    databases: Input[Dataset],
    dataset: str,
    database_url: str,
    evaluate_options: dict,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    report_html: Output[HTML],
) -> float:
    """Score the predictions against the gold SQL; returns overall EX for the publish gate.

    `dataset` and `database_url` are the EvaluateConfig settings of those names; `evaluate_options` sets the others.

    Args:
        eval_data: The dev records (gold SQL and hardness) from preprocess.
        predictions: The predictions to score.
        databases: The dev split's databases and tables.json (SQL runs on database_url instead when it is set).
        evaluation: metrics.json, results.jsonl (a verdict per question) and the reports.
        metrics: EX and EM per hardness level, for the Kubeflow UI.
        report: The report in Markdown.
        report_html: The report in HTML.

    Returns:
        EX over all questions (0 to 1), for the publish gate.
    """
    import shutil
    from pathlib import Path

    from sqltune.evaluate.config import EvaluateConfig
    from sqltune.evaluate.run import evaluate as run_evaluate
    from sqltune.settings import build_config

    db_dir = Path(databases.path)
    result = run_evaluate(
        gold=Path(eval_data.path) / "records.jsonl",
        predictions=Path(predictions.path) / "predictions.jsonl",
        db_dir=db_dir / "database",
        tables=db_dir / "tables.json",
        out=evaluation.path,
        config=build_config(
            EvaluateConfig, {"dataset": dataset, "database_url": database_url}, evaluate_options, "evaluate_options"
        ),
    )
    for measure in ("ex", "em"):
        for level, value in result.get(measure, {}).items():
            if value is not None:
                metrics.log_metric(f"{measure}_{level}", float(value))
    shutil.copyfile(Path(evaluation.path) / "report.md", report.path)
    shutil.copyfile(Path(evaluation.path) / "report.html", report_html.path)
    return float(result["ex"]["all"] or 0.0)
