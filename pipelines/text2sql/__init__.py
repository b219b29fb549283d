"""The text2sql pipeline (`pipeline.py`): preprocess, train, predict, evaluate, publish. Importing this package
loads nothing else: `sqltune run` finds the compiled YAML here without importing kfp."""
