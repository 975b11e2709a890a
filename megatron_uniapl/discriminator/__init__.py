"""Discriminators that score a policy response against the expert reference."""
