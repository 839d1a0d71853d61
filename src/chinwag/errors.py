"""The single error root of chinwag and its two protocol branches."""


class ChinwagError(Exception):
    """Root of every error chinwag raises on purpose."""


class LocalProtocolError(ChinwagError):
    """We tried something the protocol does not allow (a bug or bad user input)."""


class RemoteProtocolError(ChinwagError):
    """The peer sent something the protocol does not allow; closes that connection.

    `code` is the reason code sent in the goodbye and logged.
    """

    def __init__(self, message: str, code: str = "protocol_error") -> None:
        super().__init__(message)
        self.code = code


class UsageError(ChinwagError):
    """A user command or option was invalid; shown to the user, nothing else happens."""


class DataDirLocked(ChinwagError):
    """Another chinwag process already uses this data directory."""


class DataDirExported(ChinwagError):
    """This data directory was exported (keymove.py): it must not run unless forced."""
