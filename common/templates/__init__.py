"""Pipeline templates: load (YAML, typed or described shape), validate (each step against its processor), resolve."""

from common.templates.loader import list_templates, load_setup_pipeline, load_template
from common.templates.models import PipelineTemplate, ResolvedPipeline, StepSpec
from common.templates.resolver import resolve_template
from common.templates.step_checks import InvalidTemplate

__all__ = [
    "InvalidTemplate",
    "PipelineTemplate",
    "ResolvedPipeline",
    "StepSpec",
    "list_templates",
    "load_setup_pipeline",
    "load_template",
    "resolve_template",
]
