"""Domain errors, in one place. Each message names the file, key or value and what was expected."""


class CamvisError(Exception):
    """Base class: the CLI prints these as one clean line and exits 2, no traceback."""


class ConfigError(CamvisError):
    """A config, grid or override is wrong; `problems` lists each single problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


class RawDataError(CamvisError):
    """The raw data layout (images, masks, depth maps) is wrong."""


class StoreError(CamvisError):
    """A path is not a camvis store, or one of another format version."""


class SubmissionError(CamvisError):
    """Jobs could not be submitted (no SLURM, sbatch failed, ...)."""


class DiskFullError(CamvisError, OSError):
    """A write failed for want of space: ENOSPC (disk full), EDQUOT (quota) or EFBIG (file too
    large). Also an OSError, with the original errno, so code that shields itself from
    file-system failures (e.g. a job writing its error.txt) still catches it."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..." form
        return str(self.args[0]) if self.args else ""


class PathError(CamvisError, OSError):
    """A destination or input path cannot be used: read-only, not permitted, not a directory, a directory
    where a file is expected (camvis.io.os_error). Also an OSError, with the original errno."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PredictError(CamvisError):
    """An image, depth map or model cannot be predicted with (camvis-predict, camvis-export)."""
