"""What a run reports: console logging and the progress bar, metric sinks (metrics.jsonl, wandb),
and the metrics of one training step (`step`)."""
