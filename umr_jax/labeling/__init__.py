"""Stage 1's model: the frozen T5/mT5 question-likelihood scorer and its prompts (the score
stage that drives it over a retrieval file: `stages.score`)."""
