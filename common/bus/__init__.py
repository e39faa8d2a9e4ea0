"""Bus port (publish messages to topics) and its adapters; versioned message models."""
