"""The web UI: an aiohttp server in the node's event loop, and the page it serves (static/)."""
