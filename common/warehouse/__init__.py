"""Warehouse port and its adapters. SQL is written once, in BigQuery dialect."""

from common.warehouse.base import Warehouse, WriteMode

__all__ = ["Warehouse", "WriteMode"]
