"""The pipeline's stages and what they share: one driver per stage (encode, index, retrieve,
score, train, evaluate) and its command module (`*_cli.py`), the loop that composes them, and
`folder.StageFolder`, the guarantees of every stage's output folder (lock, settings, shard
records, temporaries)."""
