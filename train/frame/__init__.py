"""Frame scoring: datasets, training loop, run folders, evaluation (Roy et al. 2020, section 1)."""
