"""Convergence shared library: every rule the three functions share lives here."""
