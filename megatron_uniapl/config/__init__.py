"""The run configuration: typed sections, recipes with inheritance, overrides. Torch-free.

Every setting a run can have is a dataclass field with a docstring, defined once here and imported
by the code that consumes it (never the reverse), so this package sits at the bottom of the
import graph and loading a recipe imports neither torch nor Megatron.

    yaml_io        dict <-> dataclass conversion, YAML with duplicate-key errors, overrides
    model          ModelOptions: parallel layout and precision of the Qwen3 model
    objective      PolicyGradientConfig, Stage, StepWeights, ObjectiveConfig (the loss weights)
    schedule       MuSchedule: the SFT weight over steps (constant, CHORD-style decay)
    variants       the paper's variants as stage lists
    rollout        SamplingConfig, VLLMEngineConfig
    discriminator  input templates, FrozenScorerConfig, CoTrainedDiscriminatorConfig
    reward         RewardMode
    run            optimizer, train, checkpoint, logging and plan sections
    sections       the remaining sections and RunConfig (with the cross-section checks)
    loader         recipes on disk -> a validated RunConfig, and back
"""

from megatron_uniapl.config.loader import (
    RESOLVED_NAME,
    dump_config,
    load_config,
    main,
    parse_args,
    resolve_data,
    save_resolved,
)
from megatron_uniapl.config.sections import RunConfig
from megatron_uniapl.config.yaml_io import ConfigError

__all__ = [
    "RESOLVED_NAME",
    "ConfigError",
    "RunConfig",
    "dump_config",
    "load_config",
    "main",
    "parse_args",
    "resolve_data",
    "save_resolved",
]
