"""The pipeline's stages and what they share: `folder.StageFolder`, the guarantees of every
stage's output folder (lock, settings, shard records, temporaries)."""
