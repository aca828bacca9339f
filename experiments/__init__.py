"""One thin module per reference study; each runs as ``python -m experiments.NAME``."""
