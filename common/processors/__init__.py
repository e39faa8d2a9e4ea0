"""Step processors, one module per ps_type family, registered by name."""

from common.processors.registry import StepContext, StepResult, get_processor, is_registered, processor

__all__ = ["StepContext", "StepResult", "get_processor", "is_registered", "processor"]
