"""Pipeline templates: load (YAML), validate (pydantic) and resolve (variables, placeholders)."""

from common.templates.loader import list_templates, load_setup_pipeline, load_template
from common.templates.models import PipelineTemplate, ResolvedPipeline, StepSpec
from common.templates.resolver import resolve_template

__all__ = [
    "PipelineTemplate",
    "ResolvedPipeline",
    "StepSpec",
    "list_templates",
    "load_setup_pipeline",
    "load_template",
    "resolve_template",
]
