"""Each provider's credential and settings formats: what is accepted, what is refused, and how it is said.

Service account keys are real RSA keys generated with `cryptography`; refusals are checked to name the rule
and never any part of the credential.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.oauth2 import service_account

from common.providers.aws.credentials import AwsAccessKey, AwsRoleArn
from common.providers.azure.credentials import AzureServicePrincipal
from common.providers.base import InvalidCredential, InvalidSettings
from common.providers.credential_checks import parse_credential, parse_settings, settings_document
from common.providers.gcp.credentials import GcpServiceAccount

MARK = "Zq9Xw7Vu"  # in every secret below, so a refusal that leaks any part of one is caught
AWS_KEY_ID = "AKIAZQ9XW7VU12345678"
AWS_SECRET = f"{MARK}/abcdefghijklmnopqrstuvwxyz012+="  # 40 characters
OPENAI_KEY = f"sk-admin-{MARK}_abcdefghij-0123456789"
ANTHROPIC_KEY = f"sk-ant-admin01-{MARK}abcdefghij0123456789_-"
DEEPSEEK_KEY = f"sk-{MARK}abcdefghij0123456789"
AZURE = {
    "tenant_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "client_secret": f"{MARK}~secret.value_0123",
}


def pem(key: Any, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key_file(rsa_key) -> dict[str, Any]:
    """A service account key file as Google Cloud issues it, with a real private key."""
    return {
        "type": "service_account",
        "project_id": "acme-billing-prod",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem(rsa_key),
        "client_email": "convergence@acme-billing-prod.iam.gserviceaccount.com",
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def key_body(key_file: dict[str, Any]) -> str:
    """A stretch of the private key's base64 body: must never appear in a refusal."""
    return key_file["private_key"].splitlines()[5]


def assert_refusal_hides(error: InvalidCredential, *secrets: str) -> None:
    text = error.message + json.dumps(error.to_body())
    for secret in (MARK, *secrets):
        assert secret not in text, text


# -- gcp ---------------------------------------------------------------------------------------------


def test_a_service_account_key_file_is_accepted_as_an_object_or_as_its_json_text(key_file):
    for credential in (key_file, json.dumps(key_file)):
        parsed = parse_credential("gcp", credential)
        assert isinstance(parsed, GcpServiceAccount)
        assert parsed.client_email == key_file["client_email"] and parsed.project_id == "acme-billing-prod"
        assert key_file["private_key"] not in repr(parsed) and key_body(key_file) not in str(parsed)


def test_a_parsed_service_account_loads_into_google_auth(key_file):
    parsed = parse_credential("gcp", key_file)
    credentials = service_account.Credentials.from_service_account_info(parsed.info())
    assert credentials.service_account_email == key_file["client_email"]
    assert credentials.project_id == "acme-billing-prod"


def test_an_ec_private_key_is_a_loadable_pem_key_too(key_file):
    parsed = parse_credential("gcp", key_file | {"private_key": pem(ec.generate_private_key(ec.SECP256R1()))})
    assert isinstance(parsed, GcpServiceAccount)


@pytest.mark.parametrize(
    "change,rule",
    [
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"},
         "private_key is not a PEM private key"),
        ({"private_key": f"not a key {MARK}"}, "private_key is not a PEM private key"),
        ({"type": "authorized_user"}, "type must be 'service_account'"),
        ({"client_email": f"{MARK}-not-an-email"}, "client_email must be an email address"),
        ({"project_id": "Not A Project"}, "project_id must be a Google Cloud project id"),
        ({"project_id": None}, "project_id must be a Google Cloud project id"),
        ({"private_key": 12345}, "private_key must be a PEM private key"),
    ],
    ids=["truncated-pem", "not-pem", "wrong-type", "bad-email", "bad-project", "null-project", "number-key"],
)  # fmt: skip
def test_a_service_account_key_file_breaking_a_rule_is_refused_naming_the_rule(key_file, change, rule):
    with pytest.raises(InvalidCredential) as refused:
        parse_credential("gcp", key_file | change)
    assert refused.value.status == 422 and refused.value.code == "invalid_credential"
    assert refused.value.message.startswith("gcp credential: ") and rule in refused.value.message
    assert_refusal_hides(refused.value, key_body(key_file))


@pytest.mark.parametrize("field", ["type", "project_id", "client_email", "private_key"])
def test_a_service_account_key_file_missing_a_field_is_refused_naming_it(key_file, field):
    with pytest.raises(InvalidCredential, match=f"gcp credential: {field} is missing"):
        parse_credential("gcp", {k: v for k, v in key_file.items() if k != field})


def test_a_public_key_or_an_encrypted_private_key_is_not_a_usable_private_key(key_file, rsa_key):
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidCredential, match="private_key is not a PEM private key"):
        parse_credential("gcp", key_file | {"private_key": public.decode()})
    encrypted = pem(rsa_key, password=b"pass-phrase")
    with pytest.raises(InvalidCredential, match="private_key is an encrypted PEM private key") as refused:
        parse_credential("gcp", key_file | {"private_key": encrypted})
    assert_refusal_hides(refused.value, encrypted.splitlines()[3])


@pytest.mark.parametrize(
    "credential,rule",
    [
        (f"{{not json {MARK}", "gcp credential is not JSON"),
        (f"just-a-key-{MARK}", "gcp credential is not JSON"),
        (json.dumps([MARK]), "gcp credential must be a service account key file"),
        (json.dumps(MARK), "gcp credential must be a service account key file"),
    ],
)
def test_a_gcp_credential_that_is_not_a_key_file_is_refused_without_echo(credential, rule):
    with pytest.raises(InvalidCredential, match=rule) as refused:
        parse_credential("gcp", credential)
    assert_refusal_hides(refused.value, credential)


# -- aws ---------------------------------------------------------------------------------------------


def test_an_aws_access_key_pair_is_accepted_as_an_object_or_its_json_text():
    pair = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET}
    for credential in (pair, json.dumps(pair)):
        parsed = parse_credential("aws", credential)
        assert isinstance(parsed, AwsAccessKey) and parsed.aws_access_key_id == AWS_KEY_ID
        assert parsed.aws_secret_access_key.get_secret_value() == AWS_SECRET
        assert AWS_SECRET not in repr(parsed)


def test_temporary_aws_keys_may_carry_their_session_token():
    token = f"FwoGZXIvYXdzE{MARK}EaDH//////////session"
    parsed = parse_credential(
        "aws",
        {
            "aws_access_key_id": "ASIA" + AWS_KEY_ID[4:],
            "aws_secret_access_key": AWS_SECRET,
            "aws_session_token": token,
        },
    )
    assert parsed.aws_session_token.get_secret_value() == token and token not in repr(parsed)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/ConvergenceCur",
        "arn:aws:iam::123456789012:role/billing/readers/cur-read",
    ],
)
def test_an_aws_role_arn_is_accepted(arn):
    parsed = parse_credential("aws", arn)
    assert isinstance(parsed, AwsRoleArn) and parsed.account_id == "123456789012"


@pytest.mark.parametrize(
    "credential,rule",
    [
        ({"aws_access_key_id": "AKIA" + "z" * 16, "aws_secret_access_key": AWS_SECRET},
         "aws_access_key_id must be AKIA or ASIA followed by 16 of A-Z0-9"),
        ({"aws_access_key_id": "AIDA" + AWS_KEY_ID[4:], "aws_secret_access_key": AWS_SECRET}, "aws_access_key_id"),
        ({"aws_access_key_id": AWS_KEY_ID + "9", "aws_secret_access_key": AWS_SECRET}, "aws_access_key_id"),
        ({"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET[:-1]},
         "aws_secret_access_key must be 40 characters of A-Za-z0-9/+="),
        ({"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET[:-1] + "!"}, "aws_secret_access_key"),
        ({"aws_access_key_id": AWS_KEY_ID}, "aws_secret_access_key is missing"),
        ({"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET, f"x{MARK}": "y"},
         "has a field it does not take (accepted: aws_access_key_id, aws_secret_access_key, aws_session_token)"),
        ("arn:aws:iam::12345678901:role/Short", "role ARN"),
        ("arn:aws:iam::123456789012:user/alice", "role ARN"),
        (f"arn:aws:iam::123456789012:role/{MARK} space", "role ARN"),
        (AWS_SECRET, "must be an access key object or a role ARN"),
    ],
    ids=["lowercase-id", "wrong-prefix", "long-id", "short-secret", "bad-secret-char", "missing-secret",
         "unknown-field", "short-account", "user-arn", "arn-with-space", "bare-secret"],
)  # fmt: skip
def test_an_aws_credential_breaking_a_rule_is_refused_without_echo(credential, rule):
    with pytest.raises(InvalidCredential) as refused:
        parse_credential("aws", credential)
    assert refused.value.message.startswith("aws credential") and rule in refused.value.message
    assert_refusal_hides(refused.value, AWS_SECRET)


# -- azure -------------------------------------------------------------------------------------------


def test_an_azure_service_principal_is_accepted():
    parsed = parse_credential("azure", AZURE)
    assert isinstance(parsed, AzureServicePrincipal) and parsed.client_id == AZURE["client_id"]
    assert AZURE["client_secret"] not in repr(parsed)


@pytest.mark.parametrize(
    "change,rule",
    [
        ({"tenant_id": "contoso.onmicrosoft.com"}, "tenant_id must be a UUID"),
        ({"client_id": "1111-2222"}, "client_id must be a UUID"),
        ({"client_secret": ""}, "client_secret must be a non-empty secret"),
        ({"client_secret": "   "}, "client_secret must be a non-empty secret"),
        ({"subscription_id": AZURE["client_id"]}, "has a field it does not take"),
    ],
)
def test_an_azure_service_principal_breaking_a_rule_is_refused_naming_it(change, rule):
    with pytest.raises(InvalidCredential) as refused:
        parse_credential("azure", AZURE | change)
    assert refused.value.message.startswith("azure credential: ") and rule in refused.value.message
    assert_refusal_hides(refused.value, AZURE["client_secret"])


def test_an_azure_credential_must_be_an_object():
    with pytest.raises(InvalidCredential, match="must be a service principal object") as refused:
        parse_credential("azure", json.dumps(AZURE["client_secret"]))
    assert_refusal_hides(refused.value, AZURE["client_secret"])


# -- API keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider,key", [("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY), ("deepseek", DEEPSEEK_KEY)]
)
def test_an_api_key_of_the_right_format_is_accepted_and_hidden_in_repr(provider, key):
    parsed = parse_credential(provider, key)
    assert parsed.root.get_secret_value() == key
    assert key not in repr(parsed) and MARK not in str(parsed)


@pytest.mark.parametrize(
    "provider,key,rule",
    [
        ("openai", f"sk-proj-{MARK}abcdefghij0123456789", "an admin key: sk-admin- followed by"),
        ("openai", f"sk-admin-{MARK}", "at least 20"),
        ("openai", f"sk-admin-{MARK}abcdefghij01234567 89", "sk-admin-"),
        ("anthropic", f"sk-ant-api03-{MARK}abcdefghij0123456789", "an admin key: sk-ant-admin followed by"),
        ("anthropic", f"sk-ant-admin01-{MARK}", "at least 20"),
        ("deepseek", f"sk-{MARK}abcdefghij-0123456789", "sk- followed by at least 20 of A-Za-z0-9"),
        ("deepseek", f"{MARK}abcdefghij0123456789", "an API key: sk-"),
        ("deepseek", f"sk-{MARK}", "at least 20"),
    ],
)
def test_an_api_key_of_the_wrong_format_is_refused_naming_the_format_not_the_key(provider, key, rule):
    with pytest.raises(InvalidCredential) as refused:
        parse_credential(provider, key)
    assert refused.value.message.startswith(f"{provider} credential: ") and rule in refused.value.message
    assert_refusal_hides(refused.value, key)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "deepseek"])
def test_an_api_key_given_as_an_object_is_refused(provider):
    with pytest.raises(InvalidCredential, match=f"{provider} credential must be an .*key string") as refused:
        parse_credential(provider, {"api_key": DEEPSEEK_KEY})
    assert_refusal_hides(refused.value, DEEPSEEK_KEY)


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        "acme-billing-prod.billing_export.gcp_billing_export_v1_0123AB_456789_ABCDEF",
        "example.com:acme-billing.billing.gcp_billing_export_resource_v1_0123AB_456789_ABCDEF",
        "acme-billing-prod.Billing_2024.costs$20240501",
    ],
)
def test_a_bigquery_billing_export_table_is_accepted_and_split(table):
    settings = parse_settings("gcp", {"billing_export_table": table})
    assert settings_document(settings) == {"billing_export_table": table}
    project, dataset, name = settings.table_parts()
    assert f"{project}.{dataset}.{name}" == table


@pytest.mark.parametrize(
    "settings,rule",
    [
        ({}, "billing_export_table is missing"),
        ({"billing_export_table": "p.d.t"}, "billing_export_table must be the BigQuery billing export table"),
        ({"billing_export_table": "acme-billing-prod.billing"}, "billing_export_table must be"),
        ({"billing_export_table": "acme-billing-prod.bill-ing.t"}, "billing_export_table must be"),
        ({"billing_export_table": "acme-billing-prod.d.t'; DROP TABLE x; --"}, "billing_export_table must be"),
        ({"billing_export_table": 42}, "billing_export_table must be"),
        ({"billing_export_table": "acme-billing-prod.d.t", "billing_table": "x"},
         "billing_table is not a setting of this provider (accepted: billing_export_table)"),
    ],
    ids=["missing", "short-project", "two-parts", "dash-in-dataset", "injection", "number", "unknown-key"],
)  # fmt: skip
def test_gcp_settings_breaking_a_rule_are_refused_naming_the_field(settings, rule):
    with pytest.raises(InvalidSettings) as refused:
        parse_settings("gcp", settings)
    assert refused.value.status == 422 and refused.value.code == "invalid_settings"
    assert refused.value.message.startswith("gcp settings: ") and rule in refused.value.message


@pytest.mark.parametrize(
    "location,stored",
    [
        ("gs://acme-cur/reports/daily", "gs://acme-cur/reports/daily"),
        ("gs://acme_cur.example.com", "gs://acme_cur.example.com"),
        ("/srv/exports/cur/", "/srv/exports/cur"),
        ("file:///srv/exports/cur", "/srv/exports/cur"),
        ("file://localhost/srv/my%20exports", "/srv/my exports"),
    ],
)
@pytest.mark.parametrize("provider,field", [("aws", "cur_location"), ("azure", "export_location")])
def test_data_locations_are_accepted_and_file_uris_become_paths(provider, field, location, stored):
    assert settings_document(parse_settings(provider, {field: location}))[field] == stored


def test_the_cur_version_defaults_to_auto_and_takes_only_known_versions():
    assert parse_settings("aws", {"cur_location": "/cur"}).cur_version == "auto"
    assert parse_settings("aws", {"cur_location": "/cur", "cur_version": "2.0"}).cur_version == "2.0"
    with pytest.raises(InvalidSettings, match="cur_version must be 'auto', 'legacy' or '2.0'"):
        parse_settings("aws", {"cur_location": "/cur", "cur_version": "3"})


@pytest.mark.parametrize(
    "location,rule",
    [
        ("exports/cur", "must be a gs://bucket/path URI or an absolute local path"),
        ("s3://acme-cur/reports", "must be a gs://bucket/path URI"),
        ("gs://Acme_Bucket/x", "not a Cloud Storage bucket name"),
        ("gs://", "not a Cloud Storage bucket name"),
        ("file://fileserver/share/cur", "a file: URI names a path on this machine"),
        ("/srv/exports/../../etc", "without '..' segments"),
        ("/srv/exports\n/cur", "must be a gs://bucket/path URI"),
        ("", "must be a gs://bucket/path URI"),
    ],
)
@pytest.mark.parametrize("provider,field", [("aws", "cur_location"), ("azure", "export_location")])
def test_bad_data_locations_are_refused_naming_the_field(provider, field, location, rule):
    with pytest.raises(InvalidSettings) as refused:
        parse_settings(provider, {field: location})
    assert (
        refused.value.message.startswith(f"{provider} settings: {field} ") and rule in refused.value.message
    )


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_a_data_location_is_required(provider):
    with pytest.raises(InvalidSettings, match="location is missing"):
        parse_settings(provider, {})


def test_openai_takes_an_optional_organization_id():
    assert settings_document(parse_settings("openai", {})) == {}
    assert settings_document(parse_settings("openai", {"organization_id": "org-AbC123"})) == {
        "organization_id": "org-AbC123"
    }
    with pytest.raises(InvalidSettings, match="organization_id must be"):
        parse_settings("openai", {"organization_id": "acme"})


@pytest.mark.parametrize("provider", ["anthropic", "deepseek"])
def test_providers_without_settings_refuse_any(provider):
    assert settings_document(parse_settings(provider, {})) == {}
    with pytest.raises(InvalidSettings, match="region is not a setting of this provider"):
        parse_settings(provider, {"region": "eu"})
