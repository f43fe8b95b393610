"""relay's benchmark harness (`make bench`): ratios against bare baselines, same run."""
