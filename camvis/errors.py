"""Domain errors, in one place. Each message names the file, key or value and what was expected."""


class CamvisError(Exception):
    """Base class: the CLI prints these as one clean line and exits 2, no traceback."""


class ConfigError(CamvisError):
    """A config, grid or override is wrong."""


class RawDataError(CamvisError):
    """The raw data layout (images, masks, depth maps) is wrong."""


class StoreError(CamvisError):
    """A path is not a camvis store, or one of another format version."""


class SubmissionError(CamvisError):
    """Jobs could not be submitted (no SLURM, sbatch failed, ...)."""


class PredictError(CamvisError):
    """An image, depth map or model cannot be predicted with (camvis-predict, camvis-export)."""
