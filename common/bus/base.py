"""The Bus port: publish messages to topics. Delivery to functions is the bus's business."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel


class Bus(ABC):
    """At-least-once publish/subscribe, as Pub/Sub provides it."""

    name: str = "bus"

    @abstractmethod
    def publish(self, topic: str, message: BaseModel, attributes: dict[str, str] | None = None) -> str:
        """Publish one message; return its message id once the bus has accepted it."""

    def publish_many(self, topic: str, messages: Sequence[BaseModel]) -> list[str]:
        """Publish several messages, batched where the adapter can; ids in order."""
        return [self.publish(topic, m, getattr(m, "attributes", dict)()) for m in messages]

    def close(self) -> None:
        """Flush and release resources."""
