"""API keys, the local keyring and the embedded root key."""

from __future__ import annotations

import math
import re
import stat
import string
from pathlib import Path

import pytest

from common.crypto.api_keys import generate_api_key, hash_api_key, key_hint, parse_api_key
from common.crypto.keyring import DecryptionFailed
from common.crypto.local import LocalKeyring
from common.crypto.root_key import ensure_root_key
from common.settings import load_settings

BASE62 = string.digits + string.ascii_letters
SECRET = b"gcp service account json: private_key=-----BEGIN PRIVATE KEY-----abc"


def random_part(key: str, org: str) -> str:
    return key[len(f"{org}_api_") :][:32]


# -- API keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("org", ["acme", "my_api_org", "a_api_b_api_c", "org_api_", "x12"])
def test_api_key_is_org_prefix_then_38_base62_characters(org: str) -> None:
    key = generate_api_key(org)
    assert re.fullmatch(rf"{re.escape(org)}_api_[A-Za-z0-9]{{38}}", key), key


@pytest.mark.parametrize("org", ["acme", "my_api_org", "a_api_b_api_c", "org_api_", "my_api"])
def test_api_key_names_its_org_even_when_the_org_contains_api(org: str) -> None:
    assert parse_api_key(generate_api_key(org)) == org


def test_api_key_carries_at_least_128_bits_of_randomness() -> None:
    keys = [generate_api_key("acme") for _ in range(1000)]
    assert len(set(keys)) == 1000
    parts = [random_part(k, "acme") for k in keys]
    assert all(len(p) == 32 and set(p) <= set(BASE62) for p in parts)
    assert 32 * math.log2(62) >= 190
    # The random part really draws from all 62 symbols, at every position, not from a smaller alphabet.
    assert set("".join(parts)) == set(BASE62)
    for position in (0, 15, 31):
        assert len({p[position] for p in parts}) >= 55


def test_flipping_any_single_character_of_a_key_is_refused() -> None:
    key = generate_api_key("my_api_org")
    assert parse_api_key(key) == "my_api_org"
    accepted = []
    for i, original in enumerate(key):
        for replacement in BASE62 + "_":
            if replacement != original:
                forged = key[:i] + replacement + key[i + 1 :]
                if parse_api_key(forged) is not None:
                    accepted.append(forged)
    assert accepted == []


@pytest.mark.parametrize(
    "key",
    [
        "",
        "acme",
        "acme_api_",
        "acme_api_" + "A" * 38,
        "Acme_api_" + "A" * 38,
        "acme_key_" + "A" * 38,
        "acme_api_" + "A" * 37 + "!",
        "x" * 300,
        None,
        12345,
    ],
)
def test_malformed_key_is_refused_without_lookup(key: object) -> None:
    assert parse_api_key(key) is None  # type: ignore[arg-type]


def test_truncated_or_extended_key_is_refused() -> None:
    key = generate_api_key("acme")
    assert parse_api_key(key[:-1]) is None
    assert parse_api_key(key + "A") is None
    assert parse_api_key("x" + key) is None


def test_hash_of_a_key_is_hex_sha256() -> None:
    key = generate_api_key("acme")
    digest = hash_api_key(key)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_api_key(key)
    assert digest != hash_api_key(generate_api_key("acme"))
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("org", ["acme", "my_api_org"])
def test_key_hint_reveals_at_most_four_random_characters(org: str) -> None:
    key = generate_api_key(org)
    hint = key_hint(key)
    secret = key[len(f"{org}_api_") :]
    assert hint.startswith(f"{org}_api_")
    revealed = hint[len(f"{org}_api_") :]
    longest = max((n for n in range(len(secret) + 1) if secret[:n] in revealed), default=0)
    assert longest <= 4
    assert sum(c in BASE62 for c in revealed) <= 4
    assert secret not in hint


# -- local keyring ----------------------------------------------------------------------------------------


@pytest.fixture
def keyset_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyset.json"


@pytest.fixture
def keyring(keyset_path: Path) -> LocalKeyring:
    return LocalKeyring(keyset_path)


def test_keyring_round_trip(keyring: LocalKeyring) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    assert SECRET not in ciphertext
    assert keyring.decrypt("acme", "integration:gcp", ciphertext) == SECRET


def test_encrypting_twice_gives_different_ciphertexts(keyring: LocalKeyring) -> None:
    first = keyring.encrypt("acme", "api_key", SECRET)
    second = keyring.encrypt("acme", "api_key", SECRET)
    assert first != second
    assert keyring.decrypt("acme", "api_key", first) == keyring.decrypt("acme", "api_key", second) == SECRET


def _assert_decryption_failed(error: DecryptionFailed) -> None:
    assert isinstance(error.status, int) and error.status >= 400
    assert error.code == "decryption_failed"
    text = f"{error} {error.message} {error.to_body()}"
    assert SECRET.decode() not in text
    assert "PRIVATE KEY" not in text


@pytest.mark.parametrize(
    ("tenant", "purpose"),
    [("globex", "integration:gcp"), ("acme", "api_key"), ("globex", "api_key"), ("acme", "integration:aws")],
)
def test_ciphertext_of_one_tenant_and_purpose_cannot_be_decrypted_as_another(
    keyring: LocalKeyring, tenant: str, purpose: str
) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    with pytest.raises(DecryptionFailed) as caught:
        keyring.decrypt(tenant, purpose, ciphertext)
    _assert_decryption_failed(caught.value)


def test_tampering_with_any_byte_is_detected(keyring: LocalKeyring) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    step = max(1, len(ciphertext) // 40)
    for index in [*range(0, len(ciphertext), step), len(ciphertext) - 1]:
        tampered = bytearray(ciphertext)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionFailed) as caught:
            keyring.decrypt("acme", "integration:gcp", bytes(tampered))
        _assert_decryption_failed(caught.value)


def test_truncated_or_garbage_ciphertext_is_refused(keyring: LocalKeyring) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    for bad in (ciphertext[:-1], ciphertext[:10], b"", b"not a ciphertext at all"):
        with pytest.raises(DecryptionFailed):
            keyring.decrypt("acme", "integration:gcp", bad)


def test_keyset_file_is_owner_only(keyring: LocalKeyring, keyset_path: Path) -> None:
    assert keyset_path.is_file()
    assert stat.S_IMODE(keyset_path.stat().st_mode) == 0o600


def test_second_keyring_on_the_same_keyset_decrypts_the_first_ones_ciphertext(keyset_path: Path) -> None:
    ciphertext = LocalKeyring(keyset_path).encrypt("acme", "api_key", SECRET)
    keyset_before = keyset_path.read_bytes()
    again = LocalKeyring(keyset_path)
    assert keyset_path.read_bytes() == keyset_before
    assert again.decrypt("acme", "api_key", ciphertext) == SECRET


def test_keyring_with_another_keyset_cannot_decrypt(tmp_path: Path) -> None:
    ciphertext = LocalKeyring(tmp_path / "a.json").encrypt("acme", "api_key", SECRET)
    with pytest.raises(DecryptionFailed):
        LocalKeyring(tmp_path / "b.json").decrypt("acme", "api_key", ciphertext)


# -- root key ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_root_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CA_ROOT_API_KEY")


def test_root_key_is_generated_once_and_stored_owner_only(no_root_key: None) -> None:
    settings = load_settings()
    assert settings.ca_root_api_key is None
    with_key, generated = ensure_root_key(settings)
    assert generated is not None and len(generated) >= 32
    assert with_key.ca_root_api_key is not None
    assert with_key.ca_root_api_key.get_secret_value() == generated
    path = settings.root_key_path
    assert path.read_text().strip() == generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_root_key_is_the_same_next_time_and_not_shown_again(no_root_key: None) -> None:
    _, generated = ensure_root_key(load_settings())
    again, shown = ensure_root_key(load_settings())
    assert shown is None
    assert again.ca_root_api_key is not None
    assert again.ca_root_api_key.get_secret_value() == generated


def test_root_keys_of_two_homes_differ(
    no_root_key: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, first = ensure_root_key(load_settings())
    monkeypatch.setenv("CONVERGENCE_HOME", str(tmp_path / "other_home"))
    _, second = ensure_root_key(load_settings())
    assert first and second and first != second


def test_root_key_is_not_generated_when_ca_root_api_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA_ROOT_API_KEY", "operator-chosen-root-key-0123456789")
    settings = load_settings()
    with_key, generated = ensure_root_key(settings)
    assert generated is None
    assert with_key.ca_root_api_key is not None
    assert with_key.ca_root_api_key.get_secret_value() == "operator-chosen-root-key-0123456789"
    assert not settings.root_key_path.exists()


def test_root_key_is_not_in_the_settings_repr(no_root_key: None) -> None:
    with_key, generated = ensure_root_key(load_settings())
    assert generated is not None
    assert generated not in repr(with_key)
    assert generated not in str(with_key)
