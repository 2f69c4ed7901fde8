"""`bnlab bench`: bnlab's batch norm timed against torch.nn's in one process (see bench.command)."""
