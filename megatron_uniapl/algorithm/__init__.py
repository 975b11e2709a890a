"""The sample-level algorithm: what makes a UniAPL step different from SFT or GRPO alone.

    engine generations --samples--> rollout Samples (one group per prompt)
                       --scoring--> task rewards (constraint checks) and discriminator scores
                       --advantages--> group-normalized A_task and A_adv per sample
    demos + rollouts   --data.packing--> packed micro-batches  --loss--> the Megatron objective

`loss` is the glue between the pure tensor losses (`megatron_uniapl.losses`) and Megatron's
pipeline schedule: packed micro-batches in, vocabulary-parallel log-probs, the UniAPL loss out.
"""
