"""Step processors, one module per ps_type family, each registered by name with its config model.

Steps of one provider live in that provider's package (common/providers/<name>/processors.py); the registry
finds them too.
"""

from common.processors.registry import (
    NoConfig,
    StepContext,
    StepResult,
    get_processor,
    is_registered,
    processor,
)

__all__ = ["NoConfig", "StepContext", "StepResult", "get_processor", "is_registered", "processor"]
