"""Slurm integration: rendering Slurm's configuration from the cluster TOML."""
