"""Data: the training-row contract, the offline evaluation suite and its builder."""
