"""Training of vidface's own detector and embedder (data preparation included)."""
