"""Site settings in one place: the outputs and jobs folders and the site profile of every command.

Each setting is taken from the first of (highest first):

1. the command line (--outputs, --jobs-dir, --profile);
2. the environment ($CAMVIS_OUTPUTS, $CAMVIS_JOBS_DIR, $CAMVIS_PROFILE; relative paths against the
   working folder);
3. the project file `camvis.yaml`, found by walking up from the working folder as git finds `.git`
   (relative paths against the file's own folder, so a command run in a sub-folder means the same);
4. the defaults: outputs, jobs, no profile.

    # camvis.yaml
    outputs: /scratch/me/camvis/outputs
    jobs_dir: jobs
    profile: slurm/profiles/my-site.yaml

The file is read with a safe YAML loader (camvis.config.load_yaml); an unknown key is an error with a
did-you-mean. Only yaml here, no torch: every command (login nodes too) resolves its settings first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from camvis.errors import ConfigError

PROJECT_FILE = "camvis.yaml"
ENV = {"outputs": "CAMVIS_OUTPUTS", "jobs_dir": "CAMVIS_JOBS_DIR", "profile": "CAMVIS_PROFILE"}
DEFAULTS: dict[str, str | None] = {"outputs": "outputs", "jobs_dir": "jobs", "profile": None}
PRECEDENCE = "command line > environment ($CAMVIS_*) > camvis.yaml (walking up from the working folder) > default"


@dataclass(frozen=True)
class Site:
    """The resolved settings and where each came from (for camvis-doctor and error messages)."""

    outputs: str
    """Where job folders and aggregates go (outputs/<experiment>/<job>/): checkpoints, scores, figures."""
    jobs_dir: str
    """Where manifests and SLURM logs go (jobs/<experiment>/)."""
    profile: str | None
    """The site profile: a YAML file with a `slurm:` section (partition, account, qos, setup lines, ...)
    under every grid's; null: none."""
    sources: dict[str, str] = field(default_factory=dict)  # key -> "--outputs" | "$CAMVIS_OUTPUTS" | file | "default"
    project_file: Path | None = None


def find_project_file(start: str | Path | None = None) -> Path | None:
    """camvis.yaml in `start` (default: the working folder) or the nearest folder above it, or None."""
    here = Path(start or os.getcwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def read_project_file(path: Path) -> dict[str, str]:
    """The settings a project file gives, paths resolved against its folder; ConfigError naming the file."""
    from camvis.config import load_yaml, unknown_key_message

    raw = load_yaml(path)
    settings: dict[str, str] = {}
    problems = []
    for key, value in raw.items():
        if key not in DEFAULTS:
            problems.append(unknown_key_message(str(key), list(DEFAULTS)))
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: expected a path (text), got {type(value).__name__} {value!r}")
        else:
            settings[key] = str(path.parent / Path(value).expanduser())  # an absolute value stays as it is
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return settings


def resolve(given: Mapping[str, str | None] | None = None, environ: Mapping[str, str] | None = None,
            start: str | Path | None = None) -> Site:
    """The site settings: `given` (the command line's values, None when not given) over the environment
    over the project file over the defaults. The project file is read only when a setting needs it."""
    given = given or {}
    environ = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    project: Path | None = None
    from_file: dict[str, str] | None = None
    for key, default in DEFAULTS.items():
        if given.get(key) is not None:
            values[key], sources[key] = given[key], "--" + key.replace("_", "-")
        elif environ.get(ENV[key]):
            values[key], sources[key] = environ[ENV[key]], "$" + ENV[key]
        else:
            if from_file is None:
                project = find_project_file(start)
                from_file = read_project_file(project) if project else {}
            if key in from_file:
                values[key], sources[key] = from_file[key], str(project)
            else:
                values[key], sources[key] = default, "default"
    return Site(str(values["outputs"]), str(values["jobs_dir"]), values["profile"], sources, project)
