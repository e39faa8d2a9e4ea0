"""Tenant keysets: each tenant's data keys are a Tink AEAD keyset, stored wrapped by a key-encryption key.

encrypt/decrypt run the tenant's keyset with `associated_data(tenant, purpose)`. The keyset lives in the
control table `tenant_keysets` (common.crypto.keyset_store), wrapped by the KEK (Cloud KMS in gcp mode) with
associated data bound to the tenant, so a wrapped keyset copied into another tenant's row does not unwrap.
An instance keeps unwrapped keysets in a bounded cache and asks the KEK once per tenant (first use: unwrap,
or create and wrap); it asks again only after an eviction, or when a ciphertext names a key it does not hold
(a rotation made elsewhere).

Rotation adds a new primary key and keeps the older ones, so every earlier ciphertext still decrypts. A Tink
ciphertext starts with its key id, and a wrapped keyset carries its key ids in clear (KeysetInfo), so finding
the keyset that holds a ciphertext's key costs a table read, never a KEK call.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import uuid
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import tink
from cachetools import LRUCache, TTLCache
from google.protobuf.message import DecodeError
from tink import aead, proto_keyset_format, secret_key_access
from tink.proto import tink_pb2

from common.crypto.keyring import DecryptionFailed, Keyring, associated_data
from common.crypto.keyset_store import KeysetRecord, KeysetStore
from common.errors import ConfigurationError, Conflict

aead.register()

KEYSET_PURPOSE = "tenant_keyset"
DATA_KEY_TEMPLATE = aead.aead_key_templates.AES256_GCM
CURRENT, ROTATING = "CURRENT", "ROTATING"
_TINK_PREFIX = 0x01


def ciphertext_key_id(ciphertext: bytes) -> int | None:
    """The Tink key id a ciphertext names in its 5-byte prefix, or None for a ciphertext without one."""
    if len(ciphertext) < 5 or ciphertext[0] != _TINK_PREFIX:
        return None
    return int.from_bytes(ciphertext[1:5], "big")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the key-encryption key -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Wrapped:
    ciphertext: bytes
    kek_version: str | None = None


class KeyEncryptionKey(ABC):
    """The key that wraps tenant keysets: Cloud KMS in gcp mode, any Tink AEAD otherwise."""

    key_name: str

    @abstractmethod
    def wrap(self, plaintext: bytes, associated_data: bytes) -> Wrapped:
        """Encrypt key material under the KEK's primary version (one KEK call)."""

    @abstractmethod
    def unwrap(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Decrypt key material (one KEK call); DecryptionFailed when it was altered or bound elsewhere."""

    def primary_version(self) -> str | None:
        """The version new wraps use, when the KEK has versions."""
        return None

    def close(self) -> None:
        """Release connections."""


class AeadKek(KeyEncryptionKey):
    """A Tink AEAD as KEK (a local keyset file, tests)."""

    def __init__(self, primitive: aead.Aead, key_name: str = "local:aead") -> None:
        self._aead = primitive
        self.key_name = key_name

    def wrap(self, plaintext: bytes, associated_data: bytes) -> Wrapped:
        return Wrapped(self._aead.encrypt(plaintext, associated_data))

    def unwrap(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(ciphertext, associated_data)
        except tink.TinkError:
            raise DecryptionFailed(
                "a tenant keyset does not unwrap: altered, or bound to another tenant"
            ) from None


# -- the keyring ----------------------------------------------------------------------------------------


def _to_handle(keyset: tink_pb2.Keyset) -> tink.KeysetHandle:
    return proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)


def _from_handle(handle: tink.KeysetHandle) -> tink_pb2.Keyset:
    return tink_pb2.Keyset.FromString(proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


def _keyset_info(keyset: tink_pb2.Keyset) -> tink_pb2.KeysetInfo:
    info = tink_pb2.KeysetInfo(primary_key_id=keyset.primary_key_id)
    for key in keyset.key:
        info.key_info.add(type_url=key.key_data.type_url, status=key.status, key_id=key.key_id,
                          output_prefix_type=key.output_prefix_type)  # fmt: skip
    return info


def _merged(keyset: tink_pb2.Keyset, *others: tink_pb2.Keyset) -> tink_pb2.Keyset:
    """`keyset` plus the keys of `others` it lacks, for decryption; the primary stays `keyset`'s."""
    merged = tink_pb2.Keyset()
    merged.CopyFrom(keyset)
    ids = {k.key_id for k in merged.key}
    for other in others:
        for key in other.key:
            if key.key_id not in ids:
                merged.key.append(key)
                ids.add(key.key_id)
    return merged


def _with_new_primary(keyset: tink_pb2.Keyset) -> tink_pb2.Keyset:
    """`keyset` plus a fresh key, made primary; the older keys stay to decrypt what they encrypted."""
    ids = {k.key_id for k in keyset.key}
    while True:
        fresh = _from_handle(tink.new_keyset_handle(DATA_KEY_TEMPLATE)).key[0]
        if fresh.key_id not in ids:
            break
    rotated = _merged(keyset)
    rotated.key.append(fresh)
    rotated.primary_key_id = fresh.key_id
    return rotated


@dataclass(frozen=True)
class _TenantKeys:
    record: KeysetRecord
    keyset: tink_pb2.Keyset
    aead: aead.Aead

    @property
    def key_ids(self) -> frozenset[int]:
        return frozenset(k.key_id for k in self.keyset.key)


class KeysetChanged(Conflict):
    code = "keyset_changed"


class TenantKeysetKeyring(Keyring):
    """Envelope encryption: per-tenant Tink keysets wrapped by a KEK, cached unwrapped per instance."""

    name = "tenant-keysets"

    def __init__(
        self, kek: KeyEncryptionKey, store: KeysetStore, *, cache_size: int = 1024,
        cache_ttl_seconds: float | None = None,
    ) -> None:  # fmt: skip
        if cache_size < 1:
            raise ConfigurationError("the tenant keyset cache needs room for at least one tenant")
        self.kek = kek
        self.store = store
        self._cache: LRUCache[str, _TenantKeys] = (
            TTLCache(cache_size, cache_ttl_seconds) if cache_ttl_seconds else LRUCache(cache_size)
        )
        self._cache_lock = threading.Lock()
        self._tenant_locks = [threading.RLock() for _ in range(64)]

    # -- the Keyring port ---------------------------------------------------------------------------------

    def encrypt(self, tenant_id: str, purpose: str, plaintext: bytes) -> bytes:
        data_ad = associated_data(tenant_id, purpose)
        keys = self._keys(tenant_id, create=True)
        assert keys is not None
        return keys.aead.encrypt(plaintext, data_ad)

    def decrypt(self, tenant_id: str, purpose: str, ciphertext: bytes) -> bytes:
        data_ad = associated_data(tenant_id, purpose)
        keys = self._keys(tenant_id, create=False)
        key_id = ciphertext_key_id(ciphertext)
        if keys is not None and key_id is not None and key_id not in keys.key_ids:
            keys = self._with_key(tenant_id, key_id) or keys
        if keys is None:
            raise DecryptionFailed("ciphertext does not belong to this tenant and purpose, or was altered")
        try:
            return keys.aead.decrypt(ciphertext, data_ad)
        except tink.TinkError:
            raise DecryptionFailed(
                "ciphertext does not belong to this tenant and purpose, or was altered"
            ) from None

    def close(self) -> None:
        self.kek.close()

    # -- what key rotation needs --------------------------------------------------------------------------

    def primary_key_id(self, tenant_id: str) -> int | None:
        """The Tink key id new ciphertexts of the tenant are made with; None for a tenant without a keyset."""
        keys = self._keys(tenant_id, create=False)
        return keys.keyset.primary_key_id if keys else None

    def rotate_keyset(self, tenant_id: str, *, rotation_id: str, kek_version: str | None) -> str:
        """Give the tenant a new primary data key for `rotation_id` (once) and wrap its keyset under the KEK's
        primary version. Returns "rotated", "rewrapped", "current" (nothing to do) or "absent" (no keyset)."""
        with self._tenant_lock(tenant_id):
            record = self.store.get(tenant_id)
            if record is None:
                return "absent"
            keys = self._fresh(record)
            if record.rotation_id != rotation_id:
                keyset, state, outcome = _with_new_primary(keys.keyset), ROTATING, "rotated"
            elif kek_version is not None and record.kek_version != kek_version:
                keyset, state, outcome = keys.keyset, record.rotation_state, "rewrapped"
            else:
                return "current"
            wrapped = self._wrap(tenant_id, keyset)
            new = replace(
                record, wrapped_keyset=wrapped[0], kek_key_name=self.kek.key_name, kek_version=wrapped[1],
                primary_key_id=keyset.primary_key_id, key_count=len(keyset.key), rotation_id=rotation_id,
                rotation_state=state, revision=record.revision + 1, rotated_at=_now(),
            )  # fmt: skip
            self._replace(record, new)
            self._remember(_TenantKeys(new, keyset, _to_handle(keyset).primitive(aead.Aead)))
            return outcome

    def finish_rotation(self, tenant_id: str, rotation_id: str) -> bool:
        """Close the tenant's rotation `rotation_id` (every secret re-encrypted); False if not rotating."""
        with self._tenant_lock(tenant_id):
            record = self.store.get(tenant_id)
            if record is None or record.rotation_state != ROTATING or record.rotation_id != rotation_id:
                return False
            new = replace(record, rotation_state=CURRENT, revision=record.revision + 1)
            self._replace(record, new)
            with self._cache_lock:
                cached = self._cache.get(tenant_id)
                if cached is not None and cached.record.keyset_id == new.keyset_id:
                    self._cache[tenant_id] = replace(cached, record=new)
            return True

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop one tenant's (or every) unwrapped keyset from this instance."""
        with self._cache_lock:
            if tenant_id is None:
                self._cache.clear()
            else:
                self._cache.pop(tenant_id, None)

    # -- internals ----------------------------------------------------------------------------------------

    def _tenant_lock(self, tenant_id: str) -> threading.RLock:
        return self._tenant_locks[zlib.crc32(tenant_id.encode()) % len(self._tenant_locks)]

    def _cached(self, tenant_id: str) -> _TenantKeys | None:
        with self._cache_lock:
            return self._cache.get(tenant_id)

    def _remember(self, keys: _TenantKeys) -> _TenantKeys:
        with self._cache_lock:
            self._cache[keys.record.tenant_id] = keys
        return keys

    def _keys(self, tenant_id: str, *, create: bool) -> _TenantKeys | None:
        keys = self._cached(tenant_id)
        if keys is not None:
            return keys
        with self._tenant_lock(tenant_id):
            keys = self._cached(tenant_id)  # another thread may have loaded it meanwhile
            if keys is not None:
                return keys
            record = self.store.get(tenant_id)
            if record is None:
                return self._create(tenant_id) if create else None
            return self._remember(self._entry(record, self._unwrap(record)))

    def _create(self, tenant_id: str) -> _TenantKeys:
        keyset = _from_handle(tink.new_keyset_handle(DATA_KEY_TEMPLATE))
        wrapped, version = self._wrap(tenant_id, keyset)
        record = KeysetRecord(
            keyset_id=str(uuid.uuid4()), tenant_id=tenant_id, wrapped_keyset=wrapped,
            kek_key_name=self.kek.key_name, kek_version=version, primary_key_id=keyset.primary_key_id,
            key_count=len(keyset.key), rotation_id=None, rotation_state=CURRENT, revision=1,
            created_at=_now(),
        )  # fmt: skip
        stored = self.store.add(record)
        if stored.keyset_id != record.keyset_id:  # another creator won: use its keyset
            keyset = self._unwrap(stored)
        return self._remember(self._entry(stored, keyset))

    def _with_key(self, tenant_id: str, key_id: int) -> _TenantKeys | None:
        """The tenant's keys including `key_id`, reloaded from the store; None if no stored keyset has it."""
        with self._tenant_lock(tenant_id):
            keys = self._cached(tenant_id)
            if keys is not None and key_id in keys.key_ids:
                return keys
            records = self.store.records(tenant_id)
            holder = next((r for r in records if key_id in r.key_ids), None)
            if holder is None:
                return None  # altered or foreign ciphertext: refused without a KEK call
            previous = [keys.keyset] if keys is not None else []
            if holder.keyset_id == records[0].keyset_id:  # the keyset in force changed (rotated elsewhere)
                return self._remember(self._entry(holder, _merged(self._unwrap(holder), *previous)))
            # A keyset that lost a creation race: keep its keys for decryption beside the one in force.
            in_force = keys if keys is not None else self._entry(records[0], self._unwrap(records[0]))
            return self._remember(
                self._entry(in_force.record, _merged(in_force.keyset, self._unwrap(holder)))
            )

    def _fresh(self, record: KeysetRecord) -> _TenantKeys:
        """Cached keys matching `record` (the row as stored now), unwrapping only if the keyset changed."""
        keys = self._cached(record.tenant_id)
        if keys is not None and keys.record.keyset_id == record.keyset_id:
            if keys.record.wrapped_keyset == record.wrapped_keyset:
                return self._remember(replace(keys, record=record))
            return self._remember(self._entry(record, _merged(self._unwrap(record), keys.keyset)))
        return self._remember(self._entry(record, self._unwrap(record)))

    def _replace(self, current: KeysetRecord, new: KeysetRecord) -> None:
        if not self.store.replace(current, new):
            self.forget(current.tenant_id)
            raise KeysetChanged(
                f"the keyset of {current.tenant_id} changed meanwhile (another rotation?); run again"
            )

    @staticmethod
    def _entry(record: KeysetRecord, keyset: tink_pb2.Keyset) -> _TenantKeys:
        try:
            return _TenantKeys(record, keyset, _to_handle(keyset).primitive(aead.Aead))
        except tink.TinkError:
            raise DecryptionFailed(
                f"the stored keyset of {record.tenant_id} is not a valid AEAD keyset"
            ) from None

    def _wrap(self, tenant_id: str, keyset: tink_pb2.Keyset) -> tuple[str, str | None]:
        # Tink's KeysetHandle.write decrypts right after encrypting to check the result: a second KMS call.
        # Writing the same EncryptedKeyset proto ourselves keeps creation to one call and the format Tink's
        # (tink.proto_keyset_format.parse_encrypted reads it back with the KMS AEAD).
        wrapped = self.kek.wrap(keyset.SerializeToString(), associated_data(tenant_id, KEYSET_PURPOSE))
        encrypted = tink_pb2.EncryptedKeyset(
            encrypted_keyset=wrapped.ciphertext, keyset_info=_keyset_info(keyset)
        )
        return base64.b64encode(encrypted.SerializeToString()).decode(), wrapped.kek_version

    def _unwrap(self, record: KeysetRecord) -> tink_pb2.Keyset:
        if record.kek_key_name != self.kek.key_name:
            raise ConfigurationError(
                f"KMS_KEY_NAME: the keyset of {record.tenant_id} is wrapped by {record.kek_key_name}, "
                f"not by the configured {self.kek.key_name}"
            )
        try:
            encrypted = tink_pb2.EncryptedKeyset.FromString(
                base64.b64decode(record.wrapped_keyset, validate=True)
            )
            plaintext = self.kek.unwrap(
                encrypted.encrypted_keyset, associated_data(record.tenant_id, KEYSET_PURPOSE)
            )
            keyset = tink_pb2.Keyset.FromString(plaintext)
        except (DecodeError, ValueError):
            raise DecryptionFailed(f"the stored keyset of {record.tenant_id} is corrupt") from None
        if not keyset.key:
            raise DecryptionFailed(f"the stored keyset of {record.tenant_id} is empty")
        return keyset
