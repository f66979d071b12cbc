"""The one base class for problems a user causes and can fix.

Its message is one sentence that names the fix; the CLI prints it on one line and exits non-zero, never a traceback.
"""


class UserError(Exception):
    """Bad input, a missing file or teacher, a checksum mismatch, no network: anything the user can fix."""


class ConfigError(UserError, ValueError):
    """A user-caused configuration problem; its message is one sentence that names the fix."""


class DamagedCheckpointError(UserError):
    """A checkpoint that cannot be read, fails its checksum, is not an sddkd checkpoint, or lacks what a resume
    needs."""
