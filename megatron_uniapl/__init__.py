"""megatron_uniapl: unified adversarial preference learning (UniAPL) on Megatron-Core and vLLM.

Importing the package does no work: submodules are imported where they are used, so that
light tools (config checks, reward functions) do not pay for torch and megatron-core.
"""

__version__ = "0.1.0"
