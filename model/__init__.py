"""model: the PyTorch MGOE trainer (and baselines) that streams the feature tables."""
