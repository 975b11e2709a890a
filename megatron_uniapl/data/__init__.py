"""Data records, JSONL readers with validation, chat templating and packing."""
