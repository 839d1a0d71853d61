"""asyncio adapters: TCP connections, the connection manager and UDP discovery."""
