"""Readers of tenants' billing sources: files (local, gs://), BigQuery billing exports, provider cost APIs."""
