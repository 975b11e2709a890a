"""Qwen3 dense models on Megatron-Core."""
