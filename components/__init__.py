"""KFP components: one thin lightweight component per pipeline step.

Each component turns its KFP artifacts into paths, calls the step's library function (imported inside
the function body: the image has sqltune and kfp preinstalled) and reports metrics and metadata back to
KFP. No logic lives here; the same library code runs from the CLI, the tests, kfp.local and a pod.
"""
