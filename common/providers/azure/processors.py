"""Azure's part of the shared source.files step: its cost exports are at the integration's export_location.

No step of its own: templates load the export with `ps_type: source.files` and `integration: azure`.
"""

from common.processors.file_sources import register_file_provider

register_file_provider("azure", "export_location")
