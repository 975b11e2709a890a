"""Offline teacher generation: demonstrations (and RL references) from a teacher model served by
the rollout engine, with the constraint filter and a resumable record log."""
