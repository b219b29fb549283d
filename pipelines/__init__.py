"""The pipelines, one folder each: `pipeline.py` (the definition), its compiled YAML (checked in, byte-stable) and
`params/` (example parameter files). Installed as `sqltune.pipelines`."""
