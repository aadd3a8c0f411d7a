"""Sharded runtime: device mesh, logical-axis sharding, multi-host start, checkpoints."""
