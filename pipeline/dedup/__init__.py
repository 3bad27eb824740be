"""Dataset-level stages: exact and MinHash near-duplicate removal (they need every shard at once)."""
