"""Retrieval stage: embedding stores, exact and ScaNN indexes, encoding and top-k retrieval."""
