"""Readers every provider shares: billing files (local, gs://), provider HTTP APIs, cost windows.

A reader of one provider's own source (its billing export, its cost API) lives in that provider's package
under common/providers/.
"""
