"""The procedural chest phantom, the simulated X-ray chain and the demo data generator
(which renders DRRs with gensyn.drr)."""
