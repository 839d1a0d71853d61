"""Identity keys, peer ids, signatures and the Noise handshake: thin wrappers over vetted libraries."""
