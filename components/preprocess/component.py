"""The preprocess component: raw Spider/BIRD/CoSQL/SParC layout -> train/eval records + databases."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from sqltune.images import image_for


@dsl.component(base_image=image_for("preprocess"), install_kfp_package=False)
def preprocess(
    dataset: str,
    source_uri: str,
    schema_style: str,
    prompt_template: str,
    schema_filter: str,
    schema_values: int,
    train_limit: int,
    eval_limit: int,
    dialect: str,
    database_url: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    databases: Output[Dataset],
):
    """Build instruction records for the train and dev splits, and the databases the dev split needs.

    Args:
        source_uri: The raw dataset in its own layout (Spider, BIRD, CoSQL or SParC): a local folder or s3:// prefix.
        train_limit: Only the first N training questions (0: every question).
        eval_limit: Only the first N dev questions (0: every question).
        database_url: Where the questions' databases are ('': the SQLite files of the source); its password comes
            from the database Secret, never from this parameter.
        train_data: The training split's records.jsonl (question, gold SQL, schema text, prompt) and manifest.
        eval_data: The dev split's records.jsonl and manifest.
        databases: The dev split's SQLite databases (database/<db_id>/*.sqlite, none with a database_url) and
            tables.json.
    """
    from sqltune.preprocess import preprocess as run_preprocess
    from sqltune.preprocess.config import split_configs

    configs = split_configs(locals())
    for split, out, db_out in (("train", train_data, None), ("dev", eval_data, databases.path)):
        config = configs[split]
        summary = run_preprocess(source_uri, out.path, config=config, databases_out=db_out)
        out.metadata.update({"records": summary["records"], "split": split, "schema_style": schema_style})
        if "schema_filter" in summary:  # the filter's recall and what it left out, in the UI
            filtered = summary["schema_filter"].items()
            out.metadata.update({f"schema_filter_{key}": value for key, value in filtered if value is not None})
