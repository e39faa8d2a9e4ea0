"""AWS's part of the shared source.files step: its CUR files are at the integration's cur_location.

No step of its own: templates load the CUR with `ps_type: source.files` and `integration: aws`.
"""

from common.processors.file_sources import register_file_provider

register_file_provider("aws", "cur_location")
