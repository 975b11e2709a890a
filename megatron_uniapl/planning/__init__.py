"""Planning arithmetic for layouts that cannot be run here: memory per GPU, step time, reports."""
