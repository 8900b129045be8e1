"""Dataset builders: the bundled emoji dataset (`preprocessing.emoji`), its npm fetcher (`preprocessing.npm`) and
the scorer for its private answers (`preprocessing.answers`)."""
