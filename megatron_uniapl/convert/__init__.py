"""Pure Hugging Face <-> Megatron-Core name and tensor mapping for Qwen3."""
