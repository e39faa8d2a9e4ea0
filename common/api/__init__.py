"""The HTTP API of CONTRACT §2: one route table, served by the functions and by `convergence serve`."""
