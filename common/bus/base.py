"""The Bus port: publish messages to topics. Delivery to functions is the bus's business."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel


def message_attributes(message: BaseModel, attributes: dict[str, str] | None) -> dict[str, str]:
    """Explicit attributes, else the message's own (tenant_id and run_id for a step)."""
    if attributes is not None:
        return attributes
    own = getattr(message, "attributes", None)
    return own() if callable(own) else {}


class Bus(ABC):
    """At-least-once publish/subscribe, as Pub/Sub provides it."""

    name: str = "bus"

    @abstractmethod
    def publish(self, topic: str, message: BaseModel, attributes: dict[str, str] | None = None) -> str:
        """Publish one message (attributes default to the message's own); return its id once accepted."""

    def publish_many(self, topic: str, messages: Sequence[BaseModel]) -> list[str]:
        """Publish several messages, batched where the adapter can; ids in order."""
        return [self.publish(topic, m) for m in messages]

    def close(self) -> None:
        """Flush and release resources."""
