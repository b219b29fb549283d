"""Everything that drives Kubeflow Pipelines: the pipeline definition, compiling it (and its GitOps
manifests), its parameters, running it locally with kfp.local, and submitting or scheduling it on a cluster.

The step libraries never import kfp; this package does, always inside functions or in the modules that
only it imports, so `sqltune --help` stays fast. The names and paths below are the pipeline's one home.
"""

from pathlib import Path

PIPELINE_NAME = "sqltune-text2sql"
PIPELINE_FILE = Path("pipelines/text2sql.yaml")  # the checked-in compiled pipeline, relative to the repo root
MANIFEST_FILE = Path("manifests/pipeline/text2sql.yaml")  # its KFP Pipeline/PipelineVersion resources
DEMO_PARAMS = Path("pipelines/params/demo.yaml")

# Settings two steps have under one name with different values: the pipeline parameter says which step.
QUALIFIED = {
    ("predict", "batch_size"): ("predict_batch_size",),
    ("preprocess", "limit"): ("train_limit", "eval_limit"),
    ("train", "nproc_per_node"): ("gpu_count",),  # a worker per GPU the pod gets
    # The SFT stage's, and the GRPO stage's after it in the same step (rl_steps 0: no GRPO stage).
    ("train", "max_steps"): ("max_steps", "rl_steps"),
    ("train", "learning_rate"): ("learning_rate", "rl_learning_rate"),
}
