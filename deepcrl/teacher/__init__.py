"""Deep residual contrastive RL teacher: networks, losses, replay with hindsight goals, training, benchmarks."""
