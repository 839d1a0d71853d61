"""Identity keys, peer ids, signatures, Noise: thin wrappers over vetted libraries."""
