"""The step_execute function."""
