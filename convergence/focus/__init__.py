"""FOCUS datasets: export a tenant's focus_costs and check it with the FinOps Foundation's validator."""
