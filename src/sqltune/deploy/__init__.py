"""Putting the pipeline on a cluster: submitting and scheduling runs through kfp.Client, and generating the
KFP `Pipeline`/`PipelineVersion` manifests. Unlike the step libraries this package drives KFP itself, so
it imports kfp, always inside functions (the CLI stays fast and the step images never need it here)."""
