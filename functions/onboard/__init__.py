"""The onboard function."""
