"""The pipeline's KFP components, one folder each: `component.py` (the thin component over the step's library),
`metadata.yaml` (its image, what it depends on, its version) and `README.md` (generated from the settings by
`sqltune compile`). Installed as `sqltune.components`; the step libraries never import kfp, these do."""
