//! Raw JSONL → Parquet, applying the shared rule set.
