"""Verifiable instruction-following constraints (one registry) and reward modes.

- `registry`: `register` a checker with its kwargs schema; `build_constraints` validates a
  prompt's IFEval-format `instruction_id_list` / `kwargs` into `Constraint` objects.
- `ifeval_words`, `ifeval_format`, `ifeval_structure`: the 25 IFEval types, with the reference
  implementation's semantics (checked against it in tests/test_rewards_ifeval_agreement.py).
- `verify`: strict and loose verdicts; `reward`: reward modes, batches and a process pool;
  `corpus`: a deterministic response workload.
"""
