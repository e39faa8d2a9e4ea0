"""Keyring port (envelope encryption bound to tenant and purpose) and API keys."""
