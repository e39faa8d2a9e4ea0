"""Claims: what must happen once across every instance, taken with a primitive atomic on the store itself."""
