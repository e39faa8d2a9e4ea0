"""One package per provider: its credential and settings models, its source reader and its processors.

`common.providers.registry` lists them. Adding a provider means a new package here (an `__init__` declaring
its `PROVIDER` entry, and whatever of credentials, source reader, `verify` check and `processors` module it
needs), its templates under configs/{provider}/, its tests, and one line in the registry: nothing else
changes.

This module imports nothing, so a provider package can import `common.providers.base` without a cycle.
"""
