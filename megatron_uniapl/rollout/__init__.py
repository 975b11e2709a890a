"""Rollout: the engine interface, the vLLM engine and live weight sync."""
