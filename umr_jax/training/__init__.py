"""Training: state, optimizer, the jitted sharded step and the resumable loop."""
