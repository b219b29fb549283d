"""The sqltune Kubeflow pipeline definition; its compiled YAML is checked in beside it."""
