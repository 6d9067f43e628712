"""User-facing errors: one class, one clear line each.

Library code raises `GetpError` for anything the user can fix (a bad file, a bad flag value, a missing
package); the CLI prints its message on one line and exits non-zero. Anything else is a bug and keeps
its traceback.
"""


class GetpError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class CheckpointError(GetpError):
    """A model file or directory that cannot be read as a gpt-oss checkpoint."""


class InputError(GetpError):
    """A getp input file, prompt or token file that cannot be used."""


class DeviceError(GetpError):
    """No usable GPU engine: CuPy missing, no device, a bad HIP_DEVICE_ID."""


class ArgumentError(GetpError, TypeError):
    """A Python API call with an argument of the wrong type (a float token, a string position)."""


class EngineFinishedError(GetpError):
    """An engine used after `finish()`."""


class NumericalError(GetpError):
    """Non-finite values where the model must produce finite ones (NaN or infinite logits)."""


class KernelArgumentError(ValueError):
    """A launch helper's argument that breaks its kernel's contract (a shape, a size, a range). A bug in
    the caller, not the user's input: not a GetpError, so it keeps its traceback."""


class KernelDtypeError(KernelArgumentError, TypeError):
    """A launch helper's array of the wrong dtype."""
