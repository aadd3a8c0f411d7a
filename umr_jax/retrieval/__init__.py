"""Retrieval's math: embedding stores, the retriever tower and its inputs, exact and ScaNN
indexes, top-k retrieval (the encode, index and retrieve stages: `stages`)."""
