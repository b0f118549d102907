"""The exception tree. Every error a user can cause is a `TuningError` with a one-line message."""


class TuningError(Exception):
    """Base class: the CLI prints the message on one line and exits with `exit_status`: 2 for a
    bad input (the default), 1 for a failure during work.

    `param` names the function parameter at fault, if one is: the message then reads
    "param: what was wrong", and the CLI shows the flag that sets it instead of the name.
    """

    exit_status = 2

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.message = message
        self.param = param


class ConfigError(TuningError, ValueError):
    """A study file is missing, malformed, or has unknown keys or out-of-range values; or the
    environment names a Keras backend that does not exist."""


class DataError(TuningError, ValueError):
    """A dataset is missing, unreadable, or has the wrong keys, shapes or dtypes."""


class StorageError(TuningError):
    """A storage URL is unknown or the database cannot be opened."""


class DatabaseLostError(StorageError):
    """The study's database was lost for longer than a worker waits for it to come back."""

    exit_status = 1


class StudyMismatchError(TuningError):
    """A stored study was created with a different search space, fold protocol or data."""


class TrainingDivergedError(TuningError):
    """Training produced a non-finite loss; the trial fails and the study goes on."""

    exit_status = 1


class DashboardError(TuningError):
    """The dashboard cannot listen on the requested host and port."""


class ExportError(TuningError):
    """A study cannot be exported: missing, without a completed trial, or no writable output."""


class WriteError(ExportError):
    """An output could not be written during work: no space left on the device, over quota, a
    read-only file system or no permission. What was published before is left as it was."""

    exit_status = 1


class ModelError(TuningError, ValueError):
    """A model file is missing, not a Keras model, legacy HDF5, or needs unsafe deserialization."""


class ImageError(TuningError, ValueError):
    """An image file is missing, unreadable, not an image, or holds no ink."""


class ParityError(ExportError):
    """A file written in a deployment format (ONNX, LiteRT, SavedModel) does not compute what the
    Keras model computes: the export fails and publishes nothing."""

    exit_status = 1
