"""Verifiable instruction-following constraints (one registry) and reward modes."""
