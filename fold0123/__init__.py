"""fold0123: honest cross-validation for small-data image competitions (see README.md)."""
