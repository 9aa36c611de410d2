"""A run on disk: synthesis with its checkpoints, run directories, compact models, export and a
run's figures."""
