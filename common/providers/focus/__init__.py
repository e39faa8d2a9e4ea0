"""FOCUS: the import of a FOCUS dataset another tool already produced (configs/focus/cost/import.yml).

It keeps no integration: the files are named by the run (`source_uri`) and read by the shared source.files
step with FOCUS column names kept as they are; the template's SQL and checks do the rest.
"""

from common.providers.base import ProviderSpec

PROVIDER = ProviderSpec(name="focus")
