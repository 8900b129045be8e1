"""What every room shares: the config schema and loader, atomic writes, the run-directory contract."""
