"""`deepcrl sweep`: the depth x width x seed scaling study, each cell a normal `deepcrl train` run directory."""
