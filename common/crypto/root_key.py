"""The root key of embedded mode: generated once, kept in CONVERGENCE_HOME/root_key (owner-only)."""

from __future__ import annotations

import os
import secrets

from pydantic import SecretStr

from common.settings import Settings


def ensure_root_key(settings: Settings) -> tuple[Settings, str | None]:
    """Settings carrying a root key; the key itself is returned only when it was just generated."""
    if settings.ca_root_api_key is not None:
        return settings, None
    path = settings.root_key_path
    generated = None
    if path.is_file():
        key = path.read_text().strip()
    else:
        key = generated = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(key + "\n")
    return settings.model_copy(update={"ca_root_api_key": SecretStr(key)}), generated
