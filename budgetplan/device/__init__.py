"""Device profiles: what a board offers for training."""
