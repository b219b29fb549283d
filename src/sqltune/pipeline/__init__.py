"""Running the compiled pipeline: compile it, read its parameters, run it locally with kfp.local.

Unlike the step libraries, this package drives KFP itself, so it imports kfp (inside functions).
"""
