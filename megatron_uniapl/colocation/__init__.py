"""Co-location of training and generation on the same devices: an explicit state machine."""
