"""Sans-IO protocol core: bytes and `now` in, events and bytes out. No sockets, clocks or randomness."""
