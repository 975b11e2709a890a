"""Instruction-following evaluation and the paper's behavioral analyses."""
