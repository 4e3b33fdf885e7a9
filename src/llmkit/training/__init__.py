"""Training: one loop for all neural models, atomic resumable checkpoints, multi-process."""
