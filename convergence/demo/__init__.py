"""Deterministic demo-data generators for local development and tests."""
