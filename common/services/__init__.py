"""Use cases the functions call: onboarding, integrations, pipelines, execution, data."""
