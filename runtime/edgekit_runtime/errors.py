"""Typed exceptions of the runtime: each carries one sentence a user can act on."""


class RuntimeErrorBase(Exception):
    """Base class of every error the runtime raises on bad input."""


class ImageError(RuntimeErrorBase):
    """An image file is missing, unreadable, truncated or not an image."""


class SpecError(RuntimeErrorBase):
    """A preprocess.json is missing fields or holds impossible values."""
