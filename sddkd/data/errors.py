"""The errors a user can cause with data files; the facts about datasets live in `sddkd.datasets`."""

from __future__ import annotations

from sddkd.errors import UserError


class DataMissingError(UserError):
    """A dataset is not where it should be; the message is one line naming the command that fixes it."""


class DataFormatError(UserError):
    """Dataset files exist but are not what they should be; the message names the fix."""
