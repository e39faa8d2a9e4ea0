"""Find and parse templates under configs/. Names come from URLs, so they are validated, never joined raw."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from common.errors import ConfigurationError, NotFound
from common.settings import CONFIGS_DIR
from common.templates.models import PipelineTemplate
from common.tenancy import validate_template_segment

# configs/ folders that are not providers: tenants can never run what is in them.
NON_PROVIDER_DIRS = frozenset({"setup", "schemas", "reference"})


def _parse(path: Path) -> PipelineTemplate:
    try:
        raw = yaml.safe_load(path.read_text())
        return PipelineTemplate.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"template {path.relative_to(CONFIGS_DIR)} is invalid: {exc}") from None


@lru_cache(maxsize=256)
def load_template(provider: str, domain: str, template: str) -> PipelineTemplate:
    """The tenant-runnable template configs/{provider}/{domain}/{template}.yml, or NotFound."""
    validate_template_segment(provider, "provider")
    validate_template_segment(domain, "domain")
    validate_template_segment(template, "template")
    path = CONFIGS_DIR / provider / domain / f"{template}.yml"
    if provider in NON_PROVIDER_DIRS or not path.is_file():
        raise NotFound(f"no template {provider}/{domain}/{template}", code="template_not_found")
    return _parse(path)


@lru_cache(maxsize=16)
def load_setup_pipeline(name: str) -> PipelineTemplate:
    """A platform setup pipeline from configs/setup/ (bootstrap, onboarding, dryrun)."""
    validate_template_segment(name, "template")
    path = CONFIGS_DIR / "setup" / f"{name}.yml"
    if not path.is_file():
        raise ConfigurationError(f"setup pipeline {name} is missing from configs/setup")
    return _parse(path)


def list_templates() -> list[tuple[str, str, str, PipelineTemplate]]:
    """Every tenant-runnable template as (provider, domain, template, parsed), sorted."""
    found = []
    for path in sorted(CONFIGS_DIR.glob("*/*/*.yml")):
        provider, domain = path.parent.parent.name, path.parent.name
        if provider in NON_PROVIDER_DIRS:
            continue
        found.append((provider, domain, path.stem, load_template(provider, domain, path.stem)))
    return found
