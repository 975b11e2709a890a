"""Pure tensor functions for the UniAPL objective (SFT, policy gradient, adversarial, composition)."""
