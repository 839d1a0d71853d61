"""chinwag: a serverless, encrypted peer-to-peer chat for the LAN."""

from chinwag.errors import ChinwagError, LocalProtocolError, RemoteProtocolError

__version__ = "0.1.0"

__all__ = ["ChinwagError", "LocalProtocolError", "RemoteProtocolError", "__version__"]
