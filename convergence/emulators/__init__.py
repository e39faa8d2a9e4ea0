"""Local stand-ins for the Google services: start, wait for, and stop emulator processes."""
