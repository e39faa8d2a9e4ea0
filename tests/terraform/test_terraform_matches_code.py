"""terraform/ deploys exactly what the code reads: one source of truth, so a rename in one place fails here.

Topics, subscriptions, push targets and the numbers of the delivery policy are read from the topology
declaration (common.bus.topology, built from Settings); environment variables, entry points and the
schedules file from Settings, local_stack, functions/*/main.py, DispatchMessage and StepSpec. Each is
compared with what the Terraform configuration evaluates to.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import zoneinfo
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from annotated_types import Le

from common.api.routes import ROUTES
from common.bus.messages import DispatchMessage
from common.bus.topology import declare_topology
from common.settings import CONFIGS_DIR, Settings, load_settings
from common.templates.models import StepSpec
from convergence.local_stack import FUNCTIONS as LOCAL_FUNCTIONS
from tests.terraform.hcl_config import REPO, Instance, Unknown, block, blocks, module_instance, root_instance

PROJECT = "my-project"
DEFAULTS = {name: field.default for name, field in Settings.model_fields.items()}
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}
SECRET_NAMES = {
    name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
}
# What a function needs in gcp mode (docs/modes.md); everything else keeps its Settings default.
REQUIRED_ENVIRONMENT = {
    "CONVERGENCE_HOME", "CONVERGENCE_WAREHOUSE", "CONVERGENCE_BUS", "CONVERGENCE_KEYRING", "GCP_PROJECT_ID",
    "BIGQUERY_LOCATION", "KMS_KEY_NAME", "CONTROL_DATASET", "STEPS_TOPIC", "SCHEDULES_TOPIC",
    "DEAD_LETTER_TOPIC", "STEP_MAX_ATTEMPTS", "CONVERGENCE_CLAIMS", "CLAIMS_BUCKET",
}  # fmt: skip
SMTP = {"host": "smtp.example.com", "port": 587, "username": "convergence", "from": "c@example.com",
        "starttls": True, "password_secret": "smtp-password"}  # fmt: skip
MAX_STEP_SECONDS = next(m.le for m in StepSpec.model_fields["timeout_seconds"].metadata if isinstance(m, Le))
TOPOLOGY = declare_topology(SimpleNamespace(**DEFAULTS))  # what every reader of the topology builds


@pytest.fixture(scope="module", params=["defaults", "with_smtp"])
def root(request: pytest.FixtureRequest) -> Instance:
    """terraform/ as planned with only project_id given, and with every optional setting given too."""
    extra = {"smtp": SMTP} if request.param == "with_smtp" else {}
    return root_instance({"project_id": PROJECT, **extra})


@pytest.fixture(scope="module")
def plain() -> Instance:
    return root_instance({"project_id": PROJECT})


def deployments(root: Instance) -> dict[str, dict[str, Any]]:
    return root.for_each(root.module.modules["function"])


def function_resource(root: Instance, name: str) -> tuple[Instance, dict[str, Any]]:
    instance = module_instance(root, "function", name)
    return instance, instance.module.resource("google_cloudfunctions2_function", "this")


def decorated_functions(main_py: Path) -> dict[str, str]:
    """Entry points of a functions/*/main.py: function name -> http | cloudevent, from its decorators."""
    kinds = {"http": "http", "cloud_event": "cloudevent"}
    found = {}
    for node in ast.parse(main_py.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Attribute) and decorator.attr in kinds:
                    found[node.name] = kinds[decorator.attr]
    return found


def http_groups(main_py: Path) -> set[str]:
    """Route groups a main.py serves: the arguments of its function_http_handler(...) calls."""
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(main_py.read_text()))
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "function_http_handler"
    }


# -- topics and subscriptions ------------------------------------------------------------------------


def test_topic_and_dataset_variables_default_to_settings(plain: Instance) -> None:
    for name in ("steps_topic", "schedules_topic", "dead_letter_topic", "control_dataset", "bigquery_location",
                 "step_max_attempts"):  # fmt: skip
        assert plain.variables[name] == DEFAULTS[name], name


def subscriptions_by_name(pubsub: Instance) -> dict[str, dict[str, Any]]:
    """The module's google_pubsub_subscription bodies, keyed by the subscription name they evaluate to."""
    return {
        pubsub.eval(body["name"]): body
        for body in pubsub.module.of_type("google_pubsub_subscription").values()
    }


def test_topics_are_the_declared_topics(plain: Instance) -> None:
    pubsub = module_instance(plain, "pubsub")
    names = {pubsub.eval(body["name"]) for body in pubsub.module.of_type("google_pubsub_topic").values()}
    assert names == set(TOPOLOGY.topics)
    assert names == {DEFAULTS["steps_topic"], DEFAULTS["schedules_topic"], DEFAULTS["dead_letter_topic"]}


def test_subscriptions_are_named_and_attached_as_declared(plain: Instance) -> None:
    pubsub = module_instance(plain, "pubsub")
    topics = {
        name: pubsub.eval(body["name"]) for name, body in pubsub.module.of_type("google_pubsub_topic").items()
    }
    attached = {}
    for body in pubsub.module.of_type("google_pubsub_subscription").values():
        topic_ref = pubsub.eval(body["topic"])
        assert isinstance(topic_ref, Unknown) and topic_ref.expr.startswith("google_pubsub_topic.")
        attached[topics[topic_ref.expr.split(".")[1]]] = pubsub.eval(body["name"])
    assert attached == TOPOLOGY.subscription_names()


def test_only_the_declared_subscription_dead_letters_after_step_max_attempts(plain: Instance) -> None:
    pubsub = module_instance(plain, "pubsub")
    subscriptions = subscriptions_by_name(pubsub)
    with_policy = {name for name, body in subscriptions.items() if blocks(body.get("dead_letter_policy"))}
    declared = {s.name: s.dead_letter for s in TOPOLOGY.subscriptions if s.dead_letter}
    assert with_policy == set(declared) == {f"{DEFAULTS['steps_topic']}-push"}
    topics = {f"google_pubsub_topic.{name}.id": pubsub.eval(body["name"])
              for name, body in pubsub.module.of_type("google_pubsub_topic").items()}  # fmt: skip
    for name, dead_letter in declared.items():
        policy = pubsub.eval(block(subscriptions[name], "dead_letter_policy"))
        assert isinstance(policy["dead_letter_topic"], Unknown)
        assert topics[policy["dead_letter_topic"].expr] == dead_letter.topic
        assert policy["max_delivery_attempts"] == dead_letter.max_delivery_attempts
    assert TOPOLOGY.max_delivery_attempts == DEFAULTS["step_max_attempts"] == 5
    assert plain.variables["step_max_attempts"] == TOPOLOGY.max_delivery_attempts


def test_every_subscription_outlasts_the_longest_step_and_retries_as_declared(plain: Instance) -> None:
    assert MAX_STEP_SECONDS == 540
    assert MAX_STEP_SECONDS <= TOPOLOGY.ack_deadline_seconds <= 600
    assert plain.variables["ack_deadline_seconds"] == TOPOLOGY.ack_deadline_seconds
    assert (plain.variables["retry_minimum_backoff_seconds"], plain.variables["retry_maximum_backoff_seconds"]) == (
        TOPOLOGY.retry.minimum_backoff_seconds, TOPOLOGY.retry.maximum_backoff_seconds)  # fmt: skip
    pubsub = module_instance(plain, "pubsub")
    for name, body in pubsub.module.of_type("google_pubsub_subscription").items():
        deadline = pubsub.eval(body["ack_deadline_seconds"])
        assert MAX_STEP_SECONDS <= deadline <= 600, name
        assert deadline == TOPOLOGY.ack_deadline_seconds, name
        retry = pubsub.eval(block(body, "retry_policy"))
        assert retry == {"minimum_backoff": f"{TOPOLOGY.retry.minimum_backoff_seconds:g}s",
                         "maximum_backoff": f"{TOPOLOGY.retry.maximum_backoff_seconds:g}s"}, name  # fmt: skip
        assert pubsub.eval(block(body, "expiration_policy")) == {"ttl": ""}, f"{name} must never expire"


def test_push_subscriptions_reach_the_declared_functions(plain: Instance) -> None:
    # The same declaration tells convergence/local_stack.py where each subscription pushes.
    pubsub = module_instance(plain, "pubsub")
    subscriptions = subscriptions_by_name(pubsub)
    assert set(subscriptions) == {s.name for s in TOPOLOGY.subscriptions}
    for declared in TOPOLOGY.subscriptions:
        push = pubsub.eval(block(subscriptions[declared.name], "push_config"))
        service = f'module.function["{declared.function}"].service_uri'
        assert push["push_endpoint"] == Unknown(declared.push_endpoint(service, PROJECT)), declared.name
        token = push["oidc_token"][0]
        assert token == {"service_account_email": Unknown("google_service_account.push.email"),
                         "audience": Unknown(service)}, declared.name  # fmt: skip


def test_declared_push_targets_are_deployed_cloudevent_functions(plain: Instance) -> None:
    deployed = deployments(plain)
    for declared in TOPOLOGY.subscriptions:
        spec = deployed[declared.function]
        assert spec["signature_type"] == "cloudevent", declared.name
        entry_points = decorated_functions(REPO / "functions" / spec["source"] / "main.py")
        # the handler of one-process mode is an entry point of the same source, as common.wiring names it
        assert entry_points.get(declared.handler) == "cloudevent", declared.name


def test_pubsub_service_agent_may_dead_letter(plain: Instance) -> None:
    pubsub = module_instance(plain, "pubsub")
    publisher = pubsub.eval(pubsub.module.resource("google_pubsub_topic_iam_member", "dead_letter_publisher"))
    subscriber = pubsub.eval(
        pubsub.module.resource("google_pubsub_subscription_iam_member", "steps_dead_letter_subscriber")
    )
    assert publisher["topic"] == Unknown("google_pubsub_topic.dead_letter.name")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert subscriber["subscription"] == Unknown("google_pubsub_subscription.steps_push.name")
    assert subscriber["role"] == "roles/pubsub.subscriber"
    for grant in (publisher, subscriber):
        assert grant["member"] == Unknown(
            "serviceAccount:service-data.google_project.this.number@gcp-sa-pubsub.iam.gserviceaccount.com"
        )


# -- functions --------------------------------------------------------------------------------------------


def test_deployments_are_the_local_stack_functions(plain: Instance) -> None:
    deployed = {(name, spec["entry_point"], spec["source"], spec["signature_type"])
                for name, spec in deployments(plain).items()}  # fmt: skip
    assert deployed == set(LOCAL_FUNCTIONS)


def test_entry_points_are_decorated_functions_of_the_staged_main(plain: Instance) -> None:
    for name, spec in deployments(plain).items():
        instance, function = function_resource(plain, name)
        source = Path(instance.variables["source_dir"]).resolve()
        assert source == REPO / "build" / spec["source"], name
        entry_points = decorated_functions(REPO / "functions" / spec["source"] / "main.py")
        build = instance.eval(block(function, "build_config"))
        assert entry_points.get(build["entry_point"]) == instance.variables["signature_type"], name
        assert build["environment_variables"] == {
            "GOOGLE_FUNCTION_SIGNATURE_TYPE": instance.variables["signature_type"]
        }
        assert build["runtime"] == "python311"


def test_environment_names_are_settings_fields(root: Instance) -> None:
    for name in deployments(root):
        instance, function = function_resource(root, name)
        service = instance.eval(block(function, "service_config"))
        plain_names = set(service["environment_variables"])
        secret_names = set(instance.variables["secret_environment"])
        assert plain_names <= SETTINGS_NAMES, (
            f"{name}: {plain_names - SETTINGS_NAMES} are not Settings fields"
        )
        assert secret_names <= SETTINGS_NAMES, (
            f"{name}: {secret_names - SETTINGS_NAMES} are not Settings fields"
        )
        assert REQUIRED_ENVIRONMENT <= plain_names, f"{name} lacks {REQUIRED_ENVIRONMENT - plain_names}"
        assert not plain_names & SECRET_NAMES, f"{name}: secrets must come from Secret Manager"
        dynamic = service["dynamic"][0]["secret_environment_variables"]
        assert dynamic["for_each"] == instance.variables["secret_environment"]
        assert dynamic["content"][0]["key"] == Unknown("secret_environment_variables.key")


def test_environment_values_load_as_gcp_mode_settings(
    plain: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms_key = "projects/my-project/locations/us-central1/keyRings/convergence/cryptoKeys/tenant-keysets"
    for name in deployments(plain):
        instance, function = function_resource(plain, name)
        environment = instance.eval(block(function, "service_config"))["environment_variables"]
        assert environment["KMS_KEY_NAME"] == Unknown("module.kms.crypto_key_id")
        unknown = {k for k, v in environment.items() if isinstance(v, Unknown)}
        assert unknown == {"KMS_KEY_NAME"}, f"{name}: {unknown} are not known before apply"
        for variable, value in environment.items():
            monkeypatch.setenv(variable, kms_key if variable == "KMS_KEY_NAME" else value)
        settings = load_settings()
        assert (settings.convergence_warehouse, settings.convergence_bus, settings.convergence_keyring) == (
            "bigquery",
            "pubsub",
            "gcp-kms",
        )
        assert settings.gcp_project_id == PROJECT
        assert (settings.steps_topic, settings.schedules_topic, settings.dead_letter_topic) == (
            DEFAULTS["steps_topic"],
            DEFAULTS["schedules_topic"],
            DEFAULTS["dead_letter_topic"],
        )
        assert settings.step_max_attempts == DEFAULTS["step_max_attempts"]
        assert settings.convergence_claims == "gcs"
        assert settings.claims_bucket == plain.eval(plain.module.resource("google_storage_bucket", "claims")["name"])
    kms = module_instance(plain, "kms")
    assert kms.eval(kms.module.outputs["crypto_key_id"]["value"]) == Unknown("google_kms_crypto_key.this.id")


def test_root_key_reaches_only_the_functions_serving_root_routes(root: Instance) -> None:
    root_groups = {route.group for route in ROUTES if route.auth in ("root", "root_or_tenant")}
    for name, spec in deployments(root).items():
        instance, _ = function_resource(root, name)
        main_py = REPO / "functions" / spec["source"] / "main.py"
        serves_root = spec["signature_type"] == "http" and bool(
            http_groups(main_py) & (root_groups | {"both"})
        )
        if name == "trigger_schedules":
            serves_root = False  # the CloudEvent entry point serves no route
        secrets = instance.variables["secret_environment"]
        assert ("CA_ROOT_API_KEY" in secrets) == serves_root, name
        grants = instance.module.resource("google_secret_manager_secret_iam_member", "accessor")
        assert instance.eval(grants["for_each"]) == secrets
        assert instance.eval(grants["role"]) == "roles/secretmanager.secretAccessor"


def test_push_targets_are_private_and_the_api_is_public(plain: Instance) -> None:
    for name, spec in deployments(plain).items():
        instance, function = function_resource(plain, name)
        service = instance.eval(block(function, "service_config"))
        invokers = instance.variables["invoker_members"]
        if spec["signature_type"] == "cloudevent":
            assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY", name
            assert invokers == {"push": Unknown("serviceAccount:google_service_account.push.email")}, name
            assert (
                MAX_STEP_SECONDS
                <= service["timeout_seconds"]
                <= module_instance(plain, "pubsub").variables["ack_deadline_seconds"]
            ), name  # a push still running at its ack deadline is redelivered
        else:
            assert service["ingress_settings"] == "ALLOW_ALL", name
            assert invokers == {"public": "allUsers"}, name


def test_source_archives_are_named_by_content_hash(plain: Instance) -> None:
    for name in deployments(plain):
        instance, function = function_resource(plain, name)
        archive = instance.eval(instance.module.data[("archive_file", "source")])
        assert archive["type"] == "zip" and archive["source_dir"] == instance.variables["source_dir"]
        uploaded = instance.eval(instance.module.resource("google_storage_bucket_object", "source"))
        function_name = instance.variables["name"]
        assert uploaded["name"] == Unknown(f"{function_name}-data.archive_file.source.output_md5.zip")
        storage = instance.eval(block(block(block(function, "build_config"), "source"), "storage_source"))
        assert storage["object"] == Unknown("google_storage_bucket_object.source.name")


# -- who may do what --------------------------------------------------------------------------------------


def test_grants_name_only_deployed_functions(plain: Instance) -> None:
    names = set(deployments(plain))
    for grant in (
        "kms_encrypters",
        "kms_decrypters",
        "steps_publishers",
        "schedules_publishers",
        "dataset_creators",
        "tenant_data_members",
    ):
        assert set(plain.eval(plain.module.locals[grant])) <= names, grant
    creators = set(plain.eval(plain.module.locals["dataset_creators"]))
    assert creators.isdisjoint(plain.eval(plain.module.locals["tenant_data_members"]))


def test_kms_roles_follow_the_code_that_calls_the_keyring(plain: Instance) -> None:
    # onboard encrypts (a new tenant keyset, API-key copies, integration credentials) and so must also
    # unwrap existing keysets. A processor that reads credentials makes step_execute a decrypter.
    encrypters = plain.eval(plain.module.locals["kms_encrypters"])
    decrypters = set(plain.eval(plain.module.locals["kms_decrypters"]))
    assert encrypters == ["onboard"]
    # Processors are common/processors/ and each provider package's `processors` module.
    processors = [
        *(REPO / "common" / "processors").glob("*.py"),
        *(REPO / "common" / "providers").glob("*/processors.py"),
    ]
    reads_secrets = any(
        re.search(r"read_credential|read_integration|\.keyring\b", p.read_text()) for p in processors
    )
    assert decrypters == ({"onboard", "step_execute"} if reads_secrets else {"onboard"})
    kms = module_instance(plain, "kms")
    grants = kms.module.of_type("google_kms_crypto_key_iam_member")
    roles = {name: kms.eval(body["role"]) for name, body in grants.items()}
    assert {name: body["for_each"] for name, body in grants.items()} == {
        "encrypter": "${var.encrypters}",
        "decrypter": "${var.decrypters}",
    }
    call = plain.module.modules["kms"]
    assert "local.kms_encrypters" in call["encrypters"] and "local.kms_decrypters" in call["decrypters"]
    assert roles == {
        "encrypter": "roles/cloudkms.cryptoKeyEncrypter",
        "decrypter": "roles/cloudkms.cryptoKeyDecrypter",
    }


def test_every_function_may_write_claims_and_old_claims_are_deleted(plain: Instance) -> None:
    grant = plain.module.resource("google_storage_bucket_iam_member", "claims")
    assert grant["for_each"] == "${local.members}" and plain.eval(grant["role"]) == "roles/storage.objectUser"
    bucket = plain.module.resource("google_storage_bucket", "claims")
    rule = block(bucket, "lifecycle_rule")
    assert plain.eval(block(rule, "action"))["type"] == "Delete"
    # Claims older than a Pub/Sub message may live are deleted: never one a redelivery still needs.
    assert plain.eval(block(rule, "condition"))["age"] >= 2


# -- scheduler -----------------------------------------------------------------------------------------------


def test_scheduler_jobs_are_exactly_the_dispatchers_of_the_schedules_file(plain: Instance) -> None:
    dispatchers = yaml.safe_load((CONFIGS_DIR / "schedules.yml").read_text())["dispatchers"]
    assert dispatchers, "configs/schedules.yml needs at least one dispatcher"
    scheduler = module_instance(plain, "scheduler")
    job = scheduler.module.resource("google_cloud_scheduler_job", "dispatcher")
    assert scheduler.for_each(job) == dispatchers
    names = [scheduler.with_each(k, v).eval(job["name"]) for k, v in dispatchers.items()]
    # `convergence schedules` manages exactly the jobs named convergence-dispatch-<cadence>.
    assert names == [f"convergence-dispatch-{cadence}" for cadence in dispatchers]
    assert scheduler.variables["topic_id"] == Unknown("module.pubsub.schedules_topic_id")
    pubsub = module_instance(plain, "pubsub")
    assert pubsub.eval(pubsub.module.outputs["schedules_topic_id"]["value"]) == Unknown(
        "google_pubsub_topic.schedules.id"
    )


@pytest.mark.parametrize(
    "name", sorted(yaml.safe_load((CONFIGS_DIR / "schedules.yml").read_text())["dispatchers"])
)
def test_scheduler_job_publishes_a_dispatch_message(plain: Instance, name: str) -> None:
    scheduler = module_instance(plain, "scheduler")
    job = scheduler.module.resource("google_cloud_scheduler_job", "dispatcher")
    entry = scheduler.for_each(job)[name]
    instance = scheduler.with_each(name, entry | {"time_zone": entry.get("time_zone", "Etc/UTC")})
    assert len(instance.eval(job["schedule"]).split()) == 5
    zoneinfo.ZoneInfo(instance.eval(job["time_zone"]))
    target = instance.eval(block(job, "pubsub_target"))
    body = json.loads(base64.b64decode(target["data"]))
    message = DispatchMessage.model_validate(body)
    assert (
        body
        == {"schema": "convergence.dispatch/v1", "cadence": name}
        == message.model_dump(by_alias=True, exclude_none=True)
    )
    assert target["attributes"] == message.attributes()


def test_schedules_topic_publishers_are_the_functions_whose_code_publishes_schedules(plain: Instance) -> None:
    publishers = set(plain.eval(plain.module.locals["schedules_publishers"]))
    bulk_routes = {route.group for route in ROUTES if route.path.startswith("/api/v1/admin/runs/bulk")}
    assert bulk_routes == {"onboard"}, "the bulk route publishes the schedules message"
    # trigger_schedules: a dispatcher tick's due slots, a fan-out's chunks, a chunk's hand-on
    assert publishers == bulk_routes | {"trigger_schedules"}
    # The pubsub module grants roles/pubsub.publisher on the schedules topic to each member it is given.
    call = re.search(r'module "pubsub" \{(.*?)\n\}', (REPO / "terraform" / "main.tf").read_text(), re.DOTALL)
    assert call and re.search(
        r"schedules_publishers\s*=\s*\{\s*for name in local\.schedules_publishers : name => local\.members\[name\]\s*\}",
        call.group(1),
    )
