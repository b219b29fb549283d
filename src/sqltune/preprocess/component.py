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
    train_limit: int,
    eval_limit: int,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    databases: Output[Dataset],
):
    """Build instruction records for the train and dev splits, and the databases the dev split needs."""
    from sqltune.preprocess import preprocess as run_preprocess
    from sqltune.preprocess.config import split_configs

    configs = split_configs(locals())
    for split, out, db_out in (("train", train_data, None), ("dev", eval_data, databases.path)):
        config = configs[split]
        summary = run_preprocess(source_uri, out.path, config=config, databases_out=db_out)
        out.metadata.update({"records": summary["records"], "split": split, "schema_style": schema_style})
