"""Use cases the entry points call: onboarding, integrations, pipelines, execution, schedules, fan-out, data.

Importing the services imports the provider registry, which registers every provider's steps, so a
template loaded or a step run through a service always finds them.
"""

from common.providers import registry as _providers  # noqa: F401
