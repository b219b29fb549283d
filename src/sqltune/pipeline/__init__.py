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
