"""Control-plane and tenant metadata tables, defined by JSON schemas in configs/schemas."""
