"""Stage 1: pseudo labels from a frozen T5/mT5 by question likelihood."""
