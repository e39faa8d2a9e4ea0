"""The trigger function."""
