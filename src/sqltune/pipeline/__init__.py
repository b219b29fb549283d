"""Everything that drives Kubeflow Pipelines: compiling the pipeline (`pipelines/text2sql/`, and its GitOps
manifests), its parameters, running it locally with kfp.local, and submitting or scheduling it on a cluster.

The step libraries never import kfp; this package does, always inside functions or in the modules that
only it imports, so `sqltune --help` stays fast. The names and paths below are the pipeline's one home.
"""

from importlib.resources import files
from pathlib import Path

PIPELINE_NAME = "sqltune-text2sql"
# The pipeline's folder (`pipelines/text2sql/` of the checkout, installed as `sqltune.pipelines.text2sql`): found
# through the package, so every command finds it from any working directory.
PIPELINE_DIR = Path(str(files("sqltune.pipelines.text2sql")))
COMPONENTS_DIR = Path(str(files("sqltune.components")))  # `components/`: each component's README.md goes there
PIPELINE_FILE = PIPELINE_DIR / "text2sql.yaml"  # the checked-in compiled pipeline
DEMO_PARAMS = PIPELINE_DIR / "params" / "demo.yaml"
# Its KFP Pipeline/PipelineVersion resources, in the checkout's manifests/ (`make manifests` writes them there).
MANIFEST_FILE = PIPELINE_DIR.parents[1] / "manifests" / "pipeline" / "text2sql.yaml"

# Settings two steps have under one name with different values: the pipeline parameter says which step.
QUALIFIED = {
    ("predict", "batch_size"): ("predict_batch_size",),
    ("preprocess", "limit"): ("train_limit", "eval_limit"),
    ("train", "nproc_per_node"): ("gpu_count",),  # a worker per GPU the pod gets
    # The SFT stage's, and the GRPO stage's after it in the same step (rl_steps 0: no GRPO stage).
    ("train", "max_steps"): ("max_steps", "rl_steps"),
    ("train", "learning_rate"): ("learning_rate", "rl_learning_rate"),
}
