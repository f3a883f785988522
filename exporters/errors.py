"""The exporters' one error family: what to change is in the message."""


class ExportError(RuntimeError):
    """The export could not be done as asked; the message says what to change."""


class ValidationError(ExportError):
    """The exported model disagrees with its reference beyond the stated tolerance."""
