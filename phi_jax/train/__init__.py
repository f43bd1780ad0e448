"""Training: device mesh, optimizer, sharded train/eval steps, loop, checkpoints, data."""
