"""terraform/ follows the Terraform section of STYLE.md: four files per module, typed and described
variables, providers pinned to a range, KMS keys that rotate and cannot be destroyed, no secret values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.settings import Settings
from tests.terraform.hcl_config import TERRAFORM, block, load_module, module_instance, root_instance

MODULE_DIRS = [TERRAFORM, *sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())]
FOUR_FILES = {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}


@pytest.mark.parametrize("folder", MODULE_DIRS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_module_has_the_four_files(folder: Path) -> None:
    assert set(load_module(folder).files) == FOUR_FILES


@pytest.mark.parametrize("folder", MODULE_DIRS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_variable_is_typed_and_described_and_every_output_described(folder: Path) -> None:
    module = load_module(folder)
    assert module.variables, f"{folder} declares no variable"
    for name, spec in module.variables.items():
        assert spec.get("type"), f"variable {name} in {folder} has no type"
        assert str(spec.get("description", "")).strip(), f"variable {name} in {folder} has no description"
    for name, spec in module.outputs.items():
        assert str(spec.get("description", "")).strip(), f"output {name} in {folder} has no description"


@pytest.mark.parametrize("folder", MODULE_DIRS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_providers_are_pinned_to_a_range(folder: Path) -> None:
    (settings,) = load_module(folder).terraform
    assert re.fullmatch(r">= [\d.]+, < [\d.]+", settings["required_version"])
    providers = block(settings, "required_providers")
    assert "google" in providers
    for name, spec in providers.items():
        if not name.startswith("__"):
            assert spec["source"] == f"hashicorp/{name}"
            assert re.fullmatch(r">= [\d.]+, < [\d.]+", spec["version"]), (
                f"{name} in {folder}: {spec['version']}"
            )


def test_kms_key_rotates_every_90_days_and_cannot_be_destroyed() -> None:
    kms = module_instance(root_instance({"project_id": "my-project"}), "kms")
    key = kms.eval(kms.module.resource("google_kms_crypto_key", "this"))
    assert key["rotation_period"] == f"{90 * 24 * 3600}s"
    assert key["purpose"] == "ENCRYPT_DECRYPT"
    assert key["lifecycle"] == [{"prevent_destroy": True}]
    ring = kms.eval(kms.module.resource("google_kms_key_ring", "this"))
    assert ring["lifecycle"] == [{"prevent_destroy": True}]


def test_control_dataset_cannot_be_destroyed_with_its_contents() -> None:
    bigquery = module_instance(root_instance({"project_id": "my-project"}), "bigquery")
    dataset = bigquery.eval(bigquery.module.resource("google_bigquery_dataset", "control"))
    assert dataset["dataset_id"] == Settings.model_fields["control_dataset"].default
    assert dataset["delete_contents_on_destroy"] is False
    assert dataset["lifecycle"] == [{"prevent_destroy": True}]


def test_no_secret_value_in_variables_or_tfvars() -> None:
    secret_settings = [
        n.upper() for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
    ]
    for path in [*TERRAFORM.rglob("*.tf"), *TERRAFORM.glob("*.tfvars*")]:
        text = path.read_text()
        for name in secret_settings:
            assert not re.search(rf"\b{name}\s*=\s*\"", text), f"{path}: {name} is given a literal value"


def test_checkov_skips_give_a_reason() -> None:
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert re.search(r"checkov:skip=CKV2?_[A-Z]+_\d+:\s*\S.{20,}", line), (
                    f"{path}: {line.strip()}"
                )
