"""The adapters one function instance uses: settings plus warehouse, bus and keyring.

`common.wiring` (the composition root) builds it from settings; everything else receives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.bus.base import Bus
from common.crypto.keyring import Keyring
from common.settings import Settings
from common.warehouse.base import Warehouse


@dataclass
class Runtime:
    """Settings plus the three adapters: warehouse, bus, keyring."""

    settings: Settings
    warehouse: Warehouse
    bus: Bus
    keyring: Keyring
    caches: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.bus.close()
        close_keyring = getattr(self.keyring, "close", None)
        if close_keyring is not None:
            close_keyring()
        self.warehouse.close()
