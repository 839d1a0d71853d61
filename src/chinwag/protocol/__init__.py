"""Sans-IO protocol core: bytes and `now` in, events and bytes out; no sockets or clocks."""
