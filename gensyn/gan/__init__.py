"""SyntheX CycleGAN: networks, losses, image pool, data, training and translation."""
