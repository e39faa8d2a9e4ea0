"""The adapters one function instance uses: settings plus warehouse, bus, keyring and claims.

`common.wiring` (the composition root) builds it from settings; everything else receives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.bus.base import Bus
from common.claims.base import Claims
from common.crypto.keyring import Keyring
from common.settings import Settings
from common.warehouse.base import Warehouse


@dataclass
class Runtime:
    """Settings plus the adapters: warehouse, bus, keyring and claims."""

    settings: Settings
    warehouse: Warehouse
    bus: Bus
    keyring: Keyring
    claims: Claims = field(default=None)  # type: ignore[assignment]  # built from settings when not given
    caches: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.claims is None:
            from common.claims.local import LocalClaims

            self.claims = LocalClaims(self.settings.claims_path)

    def close(self) -> None:
        self.bus.close()
        close_keyring = getattr(self.keyring, "close", None)
        if close_keyring is not None:
            close_keyring()
        self.claims.close()
        self.warehouse.close()
