"""Console scripts of the foundation package (`sdm-train-ann`, `sdm-sample`, `sdm-eval`)."""
