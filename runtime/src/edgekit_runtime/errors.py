"""Typed exceptions of the runtime: each carries one sentence a user can act on."""


class RuntimeErrorBase(Exception):
    """Base class of every error the runtime raises on bad input."""


class ImageError(RuntimeErrorBase):
    """An image file is missing, unreadable, truncated or not an image."""


class SpecError(RuntimeErrorBase):
    """A preprocess.json is missing fields or holds impossible values."""


class ModelError(RuntimeErrorBase):
    """A model file or export directory is missing, corrupt, ambiguous or not an image classifier."""


class EngineUnavailable(RuntimeErrorBase):
    """No installed inference engine can run the model; the message names the extra to install."""


class InputError(RuntimeErrorBase):
    """An array handed to predict/run has the wrong shape, dtype or type."""
