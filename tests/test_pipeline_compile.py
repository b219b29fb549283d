"""The checked-in compiled pipeline: in sync with its source, and with the cluster settings users rely on."""

import json
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from sqltune.pipeline import PIPELINE_FILE
from sqltune.pipeline.compile import compile_pipeline
from sqltune.pipeline.params import load_params, load_pipeline_spec, parse_params

REPO = Path(__file__).resolve().parents[1]
CHECKED_IN = PIPELINE_FILE


@pytest.fixture(scope="module")
def documents():
    return list(yaml.safe_load_all(CHECKED_IN.read_text()))


@pytest.fixture(scope="module")
def executors(documents):
    """Kubernetes executor configs of every task, parsed with the kfp-kubernetes protos."""
    platform = pipeline_spec_pb2.PlatformSpec()
    json_format.ParseDict({"platforms": documents[1]["platforms"]}, platform)
    raw = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    return {name: json_format.ParseDict(config, k8s_pb2.KubernetesExecutorConfig()) for name, config in raw.items()}


def test_checked_in_yaml_is_byte_identical_to_a_fresh_compile(tmp_path, monkeypatch):
    for var in ("SQLTUNE_IMAGE_REGISTRY", "SQLTUNE_IMAGE_TAG", "SQLTUNE_IMAGE_TRAIN"):
        monkeypatch.delenv(var, raising=False)
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert fresh.read_bytes() == CHECKED_IN.read_bytes(), f"{CHECKED_IN} is stale: run `make compile`"


def test_pipeline_spec_parses_with_kfp_protos(documents):
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "sqltune-text2sql"
    tasks = spec.root.dag.tasks
    assert {"preprocess", "train", "predict", "evaluate"} <= set(tasks)
    conditions = {t.task_info.name: t.trigger_policy.condition for t in tasks.values() if t.trigger_policy.condition}
    assert conditions["ex-reaches-min-ex"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] >= "
        "inputs.parameter_values['pipelinechannel--min_ex']"
    )
    assert tasks["preprocess"].caching_options.enable_cache
    assert not tasks["train"].caching_options.enable_cache
    assert tasks["train"].retry_policy.max_retry_count == 3
    resources = spec.deployment_spec["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "{{$.inputs.parameters['pipelinechannel--gpu_type']}}"
    for executor in spec.deployment_spec["executors"].values():  # the LimitRange only fills in defaults
        limits = executor["container"]["resources"]
        assert limits["resourceCpuRequest"] == limits["resourceCpuLimit"]
        assert limits["resourceMemoryRequest"] == limits["resourceMemoryLimit"]


def test_train_lands_where_the_placement_task_says_with_secrets_and_timeout(executors):
    train = executors["exec-train"]
    for field, output in ((train.node_selector.node_selector_json, "train_node_selector"),
                          (train.tolerations[0].toleration_json, "train_tolerations")):  # fmt: skip
        assert field.task_output_parameter.producer_task == "placement"
        assert field.task_output_parameter.output_parameter_key == output
    predict = executors["exec-predict"]
    assert predict.node_selector.node_selector_json.component_input_parameter == "gpu_node_selector"
    assert train.active_deadline_seconds == 24 * 3600
    secrets = {s.secret_name_parameter.component_input_parameter: s for s in train.secret_as_env}
    s3_keys = {k.env_var for k in secrets["s3_secret_name"].key_to_env}
    assert s3_keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "hf_token_secret_name" in secrets


def test_every_task_has_a_timeout_and_publish_gets_s3_credentials(executors):
    assert {"exec-preprocess", "exec-train", "exec-predict", "exec-evaluate", "exec-publish"} <= set(executors)
    assert all(config.active_deadline_seconds > 0 for config in executors.values())
    publish_secret = executors["exec-publish"].secret_as_env[0]
    assert publish_secret.secret_name_parameter.component_input_parameter == "pipelinechannel--s3_secret_name"


def test_parameters_are_parsed_to_their_declared_types(tmp_path):
    spec = load_pipeline_spec(CHECKED_IN)
    params = parse_params(
        ["lora_rank=8", "learning_rate=1e-4", "dataset=bird", 'gpu_node_selector={"pool": "a100"}'], spec
    )
    assert params == {
        "lora_rank": 8,
        "learning_rate": 1e-4,
        "dataset": "bird",
        "gpu_node_selector": {"pool": "a100"},
    }
    config = tmp_path / "params.yaml"
    config.write_text(json.dumps({"method": "lora", "min_ex": 1}))
    assert load_params(config, ["method=qlora"], spec) == {"method": "qlora", "min_ex": 1.0}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("lora_rnk=8", "unknown pipeline parameter 'lora_rnk'"),
        ("lora_rank=eight", "NUMBER_INTEGER"),
        ("x", "key=value"),
    ],
)
def test_bad_parameters_are_clear_errors(pair, message):
    from sqltune.errors import SqltuneError

    with pytest.raises(SqltuneError, match=message):
        parse_params([pair], load_pipeline_spec(CHECKED_IN))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["eval_limit=-3"], "pipeline parameter eval_limit=-3 is invalid: expected a whole number >= 0"),
        (['train_options={"packing": "false"}'], "train_options: 'packing'='false' is invalid: expected true or false"),
        (['predict_options={"top_p": "high"}'], "predict_options: 'top_p'='high' is invalid: expected a number"),
        (['predict_options={"top_p": 1.5}'], r"predict_options: 'top_p'=1.5 is invalid: expected in \(0, 1\]"),
        (['evaluate_options={"timeout": "10"}'], "evaluate_options: 'timeout'='10' is invalid: expected a number"),
        (['publish_options={"force": 1}'], "publish_options: 'force'=1 is invalid: expected true or false, not int"),
        (['train_options={"lr_scheduler": "sideways"}'], "'lr_scheduler'='sideways' is invalid: expected one of"),
        (['train_options={"num_generations": 2.5}'], "train_options: 'num_generations' must be a whole number"),
        (["predict_batch_size=0"], "pipeline parameter predict_batch_size=0 is invalid: expected >= 1"),
        (["rl_steps=-1"], "pipeline parameter rl_steps=-1 is invalid"),
        (["rl_steps=2", "rl_learning_rate=-1"], "pipeline parameter rl_learning_rate=-1.0 is invalid"),
        (["rl_steps=2", 'train_options={"num_generations": 3}'], "train_options: 'prompts_per_step'=4 is invalid"),
        (["gpu_count=0"], "pipeline parameter gpu_count=0 is invalid: expected >= 1"),
        (["num_nodes=0"], "pipeline parameter num_nodes=0 is invalid"),
        (["min_ex=1.5"], r"pipeline parameter min_ex=1.5 is invalid: expected in \[0, 1\]"),
        (["method=grpo"], "pipeline parameter method='grpo' is invalid: expected lora or qlora"),
        (["schema_style=fancy"], "pipeline parameter schema_style='fancy' is invalid: expected one of"),
        (["promote_margin=-0.1"], "pipeline parameter promote_margin=-0.1 is invalid"),
    ],
)
def test_every_value_is_checked_as_its_step_will_before_the_run_starts(pairs, message):
    """Each task's configs are built from the values the run would start with, by the component's own function;
    the error names the pipeline parameter (or the options key) the user set."""
    from sqltune.errors import SqltuneError
    from sqltune.pipeline.params import pipeline_params

    with pytest.raises(SqltuneError, match=message):
        pipeline_params(CHECKED_IN, None, pairs)


def test_the_defaults_and_a_typical_run_pass_the_check():
    from sqltune.pipeline.params import pipeline_params

    pairs = ['train_options={"packing": true, "num_generations": 2.0}', "rl_steps=2", "eval_limit=0", "min_ex=0.2"]
    assert pipeline_params(CHECKED_IN, None, pairs)["rl_steps"] == 2
    assert pipeline_params(CHECKED_IN, None, []) == {}


def test_a_bad_value_stops_sqltune_run_before_anything_starts(tmp_path):
    """exit 2 and one line naming the parameter; no run directory, no S3 server."""
    import subprocess
    import sys

    root = tmp_path / "runs"
    command = [str(Path(sys.executable).parent / "sqltune"), "run", "--pipeline-root", str(root),
               "--pipeline-file", str(CHECKED_IN), "--param", 'predict_options={"top_p": "high"}']  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: predict_options: 'top_p'='high' is invalid: expected a number, not the string 'high'"
    ]
    assert not root.exists()


def test_every_resource_placeholder_reads_a_string_parameter(documents):
    """KFP's driver resolves a resource placeholder with the parameter's string value
    (`resolvePodSpecInputRuntimeParameter`: `GetStringValue()`), so an integer parameter there becomes an empty
    quantity and the pod is refused at run time. Every placeholder must name a STRING input or task output."""
    spec = documents[0]
    placeholder = re.compile(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}")
    dags = [spec["root"], *(c for c in spec["components"].values() if "dag" in c)]  # conditions nest DAGs
    tasks = [(task, dag) for dag in dags for task in dag["dag"]["tasks"].values()]
    checked = 0
    for task, dag in tasks:
        executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        if executor is None:  # a condition's DAG: its tasks are visited with their own DAG
            continue
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        values = [v for k, v in resources.items() if k.startswith("resource")]
        values += list(resources.get("accelerator", {}).values())
        for value in values:
            match = placeholder.fullmatch(str(value))
            if not match:
                continue
            source = task["inputs"]["parameters"][match[1]]
            if "componentInputParameter" in source:
                kind = dag["inputDefinitions"]["parameters"][source["componentInputParameter"]]["parameterType"]
            else:
                producer = dag["dag"]["tasks"][source["taskOutputParameter"]["producerTask"]]
                outputs = spec["components"][producer["componentRef"]["name"]]["outputDefinitions"]["parameters"]
                kind = outputs[source["taskOutputParameter"]["outputParameterKey"]]["parameterType"]
            assert kind == "STRING", f"{executor}: {value} reads a {kind} parameter"
            checked += 1
    assert checked >= 6 + 2 * 2  # train: GPU count and type, CPU and memory; each predict: GPU count and type


def test_every_task_waits_for_the_tasks_whose_outputs_it_reads(documents):
    """The compiler leaves a producer out of dependentTasks when its output is read only by a resource field;
    the consumer then may start first (and the local runner fails with "task 'placement' not found")."""
    spec = documents[0]
    dags = [spec["root"], *(c for c in spec["components"].values() if "dag" in c)]
    checked = 0
    for dag in dags:
        for name, task in dag["dag"]["tasks"].items():
            sources = [*task.get("inputs", {}).get("parameters", {}).values()]
            sources += task.get("inputs", {}).get("artifacts", {}).values()
            producers = {
                source[key]["producerTask"]
                for source in sources
                for key in ("taskOutputParameter", "taskOutputArtifact")
                if key in source
            }
            missing = producers - set(task.get("dependentTasks", []))
            assert not missing, f"task {name} reads outputs of {sorted(missing)} without waiting for them"
            checked += bool(producers)
    assert checked >= 5  # train, both predicts, both evaluates (and the condition's publish)


@pytest.mark.parametrize(
    ("gpu_count", "num_nodes", "rl_steps", "expected"),
    [
        (4, 1, 0, ("4", "8", "64Gi", True)),  # trains on the pod's GPUs
        (4, 1, 3, ("4", "8", "64Gi", True)),
        (4, 2, 0, ("0", "1", "2Gi", False)),  # only waits for the TrainJob: no GPU, off the GPU nodes
        (4, 2, 3, ("1", "8", "64Gi", True)),  # the GRPO stage after the TrainJob takes one GPU
        (0, 1, 0, ("0", "8", "64Gi", True)),  # trains on the CPU
    ],
)
def test_train_pod_takes_gpus_only_for_work_it_does_itself(gpu_count, num_nodes, rl_steps, expected):
    from sqltune.pipeline.placement import place

    selector, tolerations = {"pool": "h100"}, [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    where = place(gpu_count, num_nodes, rl_steps, selector, tolerations)
    gpus, cpu, memory, on_gpu_nodes = expected
    assert (where.train_gpus, where.train_cpu, where.train_memory) == (gpus, cpu, memory)
    placed = (selector, tolerations) if on_gpu_nodes else ({}, [])
    assert (where.train_node_selector, where.train_tolerations) == placed
    assert where.predict_gpus == str(gpu_count)


def test_placement_refuses_impossible_counts():
    from sqltune.errors import SqltuneError
    from sqltune.pipeline.placement import place

    with pytest.raises(SqltuneError, match="placement parameter num_nodes=0 is invalid"):
        place(1, 0, 0, {}, [])


def test_every_step_that_runs_sql_gets_the_database_password_from_the_secret_only(executors, documents):
    """database_url is a parameter; its password comes from the database Secret, never a parameter or the YAML."""
    for name in ("exec-preprocess", "exec-train", "exec-predict", "exec-evaluate", "exec-evaluate-2"):
        keys = {
            (s.secret_name_parameter.component_input_parameter, k.secret_key, k.env_var)
            for s in executors[name].secret_as_env
            for k in s.key_to_env
        }
        assert any(secret.endswith("database_secret_name") and (key, env) == ("password", "SQLTUNE_DATABASE_PASSWORD")
                   for secret, key, env in keys), name  # fmt: skip
    parameters = documents[0]["root"]["inputDefinitions"]["parameters"]
    assert parameters["database_url"]["defaultValue"] == "" and not [p for p in parameters if "password" in p]
