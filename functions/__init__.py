"""Cloud Functions entry points; each main.py is thin and calls common.services."""
