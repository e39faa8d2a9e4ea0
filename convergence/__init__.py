"""The operator's and developer's tool: the CLI, the local stack, emulators and stand-ins, the demo, staging.

Never staged into a function: functions run `common/` alone.
"""
