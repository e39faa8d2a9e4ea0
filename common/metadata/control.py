"""The control dataset's shared names, kept in the one place callers have imported them from.

The dataset helpers live in `common.metadata.control_dataset`, the organisation reads in
`common.metadata.organizations`; new code imports the repository module of the table it reads or writes.
"""

from __future__ import annotations

from common.metadata.control_dataset import CONTROL_TABLES, control_ref, is_bootstrapped
from common.metadata.organizations import active_org_slugs, get_profile

__all__ = ["CONTROL_TABLES", "active_org_slugs", "control_ref", "get_profile", "is_bootstrapped"]
