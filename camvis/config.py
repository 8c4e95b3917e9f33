"""Typed, frozen job configs; YAML loading; dotted `key=value` overrides; validation.

A job config has four sections (data, model, train, eval) plus the job's identity
(experiment, name, group). Every problem found is collected and raised as one
ConfigError naming the source file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from camvis.errors import ConfigError
from camvis.io import json_copy

MAX_LR = 10.0
"""Largest train.lr accepted: Adam moves each weight by about lr per step."""
SELECTION_METRICS = ("acc", "f1", "loss")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    store: str = "data/processed/demo.zarr"
    """Path of the Zarr patch store (built by `camvis-data build`)."""
    fold: int = 1
    """Held-out view, 1-based over the store's views in sorted order (camvis2's folds)."""
    factors: tuple[int, ...] = (2, 4, 8, 16, 32)
    """Demagnification factors used as levels; each must be a level of the store."""
    stage: str | None = None
    """Node-local folder ($VARs expanded on the node, e.g. $TMPDIR) to copy the store to once per node
    before reading it (camvis.data.stage); null: read data.store where it is. Not in any hash.
    Absolute, or starting with a variable; quote it in a shell: `'data.stage=$TMPDIR'`."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    size_hidden: int = 128
    """Channels of every encoder block (and the MLP's hidden layer)."""
    share_weights: bool = True
    """One encoder for every level instead of one per level."""
    use_mlp: bool = True
    """MLP classifier (Linear-LeakyReLU-BatchNorm-Dropout-Linear) instead of a 1x1 conv."""
    align_features: bool = False
    """Feed each level's encoding into the next level (needs factors that double)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    batch_size: int = 64
    """Patches per optimizer step per rank."""
    lr: float = 1e-3
    """Initial Adam learning rate, in (0, 10]."""
    min_lr: float = 1e-6
    """Training stops once ReduceLROnPlateau takes the learning rate below this."""
    max_epochs: int = 100
    """Upper bound on epochs."""
    selection_metric: Literal["acc", "f1", "loss"] = "acc"
    """Validation metric for ReduceLROnPlateau (factor 0.1, threshold 1e-4) and the best checkpoint."""
    plateau_patience: int = 10
    """Epochs without improvement before the learning rate is divided by 10."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    seed: int = 42
    """Seeds weights, rebalancing and shuffling."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when available, else CPU."""
    epoch_patches: int | None = None
    """Cap on training patches per epoch (after rebalancing); None: all of them."""
    selection: Literal["heldout", "inner"] = "inner"
    """What validates each epoch (best checkpoint, plateau schedule): heldout, the held-out view
    (camvis2's rule, optimistic); inner, an inner split of the training images, so the held-out
    view is scored once, by the selected weights. The paper grids set it explicitly; scores.json,
    summary.csv and the printed table record it."""
    inner_fraction: float = 0.2
    """selection inner: share of the training images (whole images, never single patches) in the inner
    split, seeded by train.seed."""
    compile: Literal["auto"] | bool = "auto"
    """torch.compile the training forward (the DDP wrapper under DDP); auto: on CUDA as the GPU check's
    verdict for this GPU and torch says (camvis.job.speedups, recorded by `make gpu-check`), off without
    one and on the CPU; true/false force it. Speed only: not in any hash."""
    fused_adam: Literal["auto"] | bool = "auto"
    """Adam's fused kernel (one launch per step) instead of foreach; auto as train.compile. Not in any hash."""
    threads: Literal["auto"] | int = "auto"
    """CPU intra-op threads of each rank: an int fixes them (CPU training's float sums, hence its
    numbers, depend on the count; the demo sets 1); auto: a local launch's share of the cores, else
    SLURM_CPUS_PER_TASK, else CAMVIS_NUM_THREADS, else torch's default (the cores). Recorded in
    scores.json; not in any hash (how it computes, like train.compile)."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    bootstrap: int = 1000
    """Bootstrap resamples of the held-out predictions (all stored), 0 to 1,000,000."""
    confidence: float = 0.95
    """Level of the bootstrap confidence intervals."""
    batch_size: int = 1024
    """Patches per forward pass when predicting."""
    seed: int = 0
    """Seed of the bootstrap."""
    figures: bool = True
    """Write the per-image figures (truth/prediction maps, prediction vs distance)."""


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    experiment: str = "default"
    """Experiment name: outputs go to outputs/<experiment>/<name>/."""
    name: str = "job"
    """Job name within the experiment (e.g. cat_fold3)."""
    group: str = "default"
    """Grid group the job belongs to (e.g. cat, align)."""
    replicate: int = 1
    """Which training seed of its grid point (1..N of the grid's `replicates: N`); identity, not hashed."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


# --------------------------------------------------------------------------- loading


MAX_YAML_NODES = 100_000
"""Cap on the nodes of a YAML document with its aliases expanded (an alias bomb expands exponentially)."""
MAX_NAME_LENGTH = 200
"""Longest experiment, job or group name (a file name; file systems allow 255 bytes)."""
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # file-system-safe: no '/', no leading '.'


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and expanded alias bombs and reads dates as
    strings (a date where a number is expected is then a type error naming the key)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_document(self, node: yaml.Node) -> Any:
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_YAML_NODES:,} nodes once its aliases are expanded "
                            f"(an alias bomb, or a recursive alias)", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then own keys: overriding merged keys is the point of merging
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}); YAML would silently keep only "
                                f"the last one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, float]) -> float:
    """Nodes of `node` with every alias expanded; inf for a recursive alias. Memoized: O(nodes)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = float("inf")  # seen again while in progress: a cycle
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


try:
    from yaml.cyaml import CParser as _CParser  # libyaml, where PyYAML was built with it
except ImportError:  # pragma: no cover - then only the pure-Python loader
    _CParser = None

if _CParser is not None:
    class StrictCLoader(_CParser, StrictLoader):  # type: ignore[misc, valid-type]
        """StrictLoader's constructor and resolvers on libyaml's parser: a grid listing thousands of
        values parses ~10x faster."""

        def __init__(self, stream: Any) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def parse_yaml(text: str, source: str, key: str = "") -> Any:
    """YAML text (of `key`, if one) -> Python objects through StrictLoader; a ConfigError naming `source`.
    libyaml parses first where PyYAML has it; whatever it refuses is parsed again by the pure-Python
    loader, whose result or error (the messages camvis documents) is what counts."""
    if _CParser is not None:
        try:
            data = yaml.load(text, Loader=StrictCLoader)  # noqa: S506 (a SafeLoader's constructor)
        except (yaml.YAMLError, RecursionError):
            pass
        else:
            return _finite(data, source, key)
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML{_yaml_where(e)}") from e
    except RecursionError as e:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from e
    return _finite(data, source, key)


def _finite(data: Any, source: str, key: str) -> Any:
    bad = non_finite(data, key)
    if bad:
        raise ConfigError(f"{source}: {bad[0]}: expected a finite number, got {bad[1]}")
    return data


def _yaml_where(error: yaml.YAMLError) -> str:
    """' at line L, column C: problem' of a YAML error, on one line."""
    if isinstance(error, yaml.reader.ReaderError):  # a byte YAML refuses, e.g. a control character
        code = error.character if isinstance(error.character, int) else ord(error.character)
        return f" at character {error.position}: {error.reason} (#x{code:04x})"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {' '.join(str(problem).split())}"


def non_finite(tree: Any, prefix: str = "") -> tuple[str, float] | None:
    """(dotted key, value) of the first non-finite float (.inf, .nan) in `tree`, or None."""
    if isinstance(tree, float) and not math.isfinite(tree):
        return prefix or "value", tree
    if isinstance(tree, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in tree.items())
    elif isinstance(tree, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(tree))
    else:
        return None
    return next((found for key, value in items if (found := non_finite(value, key))), None)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a UTF-8 YAML mapping; a missing file, bad encoding or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                          f"save the file as UTF-8") from e
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def load_job_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                    *, grid_base: bool = False) -> JobConfig:
    """A job config from a YAML file (or the defaults) with `key=value` overrides applied.

    A grid file (it has `base:`) is an error that points to camvis-launch, unless
    `grid_base`: then its base config is read (e.g. to summarize the grid's models).
    """
    raw = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if "base" in raw:
        if not grid_base:
            raise ConfigError(f"{path}: is an experiment grid (it has base:), not a job config; run it with "
                              f"camvis-launch {path} (--debug runs its first job in this process)")
        raw = raw["base"] if isinstance(raw["base"], dict) else {}
    raw = apply_overrides(raw, overrides)
    return job_config_from_dict(raw, source)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=1e-4` -> ("train.lr", 0.0001); the value is read as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.lr=1e-4")
    parsed = parse_yaml(value, f"override {text!r}", key) if value.strip() else None
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of `raw` with each dotted `key=value` set, or `key+=value` added (validation happens later)."""
    result = json_copy(raw)
    for text in overrides:
        key, append, value = split_override(text)
        set_override(result, key, append, value, text)
    return result


def split_override(text: str) -> tuple[str, bool, Any]:
    """(key, append, value): `key=value` replaces (a list too), `key+=value` appends (set_override)."""
    key, value = parse_override(text)
    append = key.endswith("+")
    return (key[:-1].rstrip() if append else key), append, value


def set_override(raw: dict[str, Any], key: str, append: bool, value: Any, text: str) -> None:
    """Set `key` to `value`; with `append`, a list gets `value`'s items (one item for a scalar) after its
    own, a mapping gets `value`'s keys over its own; a key not set yet starts empty."""
    if not append:
        set_dotted(raw, key, value)
        return
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        node = {} if isinstance(value, dict) else []
    if isinstance(node, list) and not isinstance(value, dict):
        set_dotted(raw, key, [*node, *(value if isinstance(value, list) else [value])])
    elif isinstance(node, dict) and isinstance(value, dict):
        set_dotted(raw, key, {**node, **value})
    else:
        raise ConfigError(f"override {text!r}: += adds items to a list ([a, b]) or keys to a mapping ({{k: v}}); "
                          f"{key} is {type(node).__name__} {node!r}, the value {type(value).__name__} {value!r}")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
        node = child
    node[leaf] = value


# --------------------------------------------------------------------------- validation


def job_config_from_dict(raw: Mapping[str, Any], source: str) -> JobConfig:
    """Build and validate a JobConfig; every problem is collected into one ConfigError."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    top_fields = {f.name: f for f in dataclasses.fields(JobConfig)}
    for key, value in raw.items():
        if key not in top_fields:
            errors.append(unknown_key_message(str(key), top_fields))
        elif key in SECTIONS:
            sections[key] = section_from_dict(SECTIONS[key], key, value, errors)
        else:
            sections[key] = _check_type(key, value, int if key == "replicate" else str, errors)
    for name, cls in SECTIONS.items():
        sections.setdefault(name, cls())
    if not errors:
        cfg = JobConfig(**sections)
        errors.extend(validate_values(cfg))
        if not errors:
            return cfg
    raise collected_error(source, errors)


def collected_error(source: str, problems: list[str]) -> ConfigError:
    """One ConfigError for every problem found in `source`: one line for one problem."""
    if len(problems) == 1:
        return ConfigError(f"{source}: {problems[0]}", problems)
    return ConfigError(f"{source}: {len(problems)} problems:\n  " + "\n  ".join(problems), problems)


def unknown_key_message(key: str, known: Mapping[str, Any] | list[str], prefix: str = "") -> str:
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return f"{prefix}{printable(key)}: unknown key{hint}; known keys: {', '.join(names)}"


def printable(key: Any) -> str:
    """`key` as it may appear in a one-line error: quoted when it holds a newline or other control character."""
    text = str(key)
    return text if text.isprintable() else repr(text)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of `cls` (typing.get_type_hints evaluates every annotation
    string: once per class, not per job of a 5,000-job grid)."""
    types_ = typing.get_type_hints(cls)
    return {f.name: types_[f.name] for f in dataclasses.fields(cls)}


def section_from_dict(cls: type, section: str, value: Any, errors: list[str]) -> Any:
    """The one validator of a config section: a dataclass `cls` built from the mapping `value`,
    each key checked against the type of its field (`section.key: expected ...`) and every problem
    recorded in `errors`; a key with a problem keeps its default. The job config's sections and the
    grid's slurm settings are read with it."""
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        errors.append(f"{section}: expected a mapping, got {type(value).__name__} {value!r}")
        return cls()
    hints = _field_types(cls)
    kwargs = {}
    for key, item in value.items():
        if key not in hints:
            errors.append(unknown_key_message(str(key), hints, prefix=f"{section}."))
            continue
        ok, coerced = _coerce(item, hints[key])
        if ok:
            kwargs[key] = coerced
        else:
            errors.append(f"{section}.{key}: expected {_type_name(hints[key])}, got {type(item).__name__} {item!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reachable through a type error already reported
        errors.append(f"{section}: {e}")
        return cls()


def _check_type(key: str, value: Any, expected: Any, errors: list[str]) -> Any:
    """Return `value` coerced to `expected` (int -> float, list -> tuple) or record an error."""
    ok, coerced = _coerce(value, expected)
    if not ok:
        errors.append(f"{key}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
    return coerced


def _coerce(value: Any, expected: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return value in typing.get_args(expected), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            ok, coerced = _coerce(value, option)
            if ok:
                return True, coerced
        return False, value
    if origin is dict:
        return isinstance(value, dict), value
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(expected)
        if not isinstance(value, (list, tuple)):
            value = [value]
        items = [_coerce(v, item_type) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if expected is type(None):
        return value is None, value
    if expected is bool:
        return isinstance(value, bool), value
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected is float:
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                return False, value
            return math.isfinite(number), number
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value), float(value)
        return False, value
    if expected is str:
        return isinstance(value, str), value
    return isinstance(value, expected), value


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(expected))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(expected)[0])}"
    if expected is type(None):
        return "null"
    if expected is float:
        return "a finite float"
    return getattr(expected, "__name__", str(expected))


MAX_SEED = 2**32 - 1
"""Largest seed: numpy's generators take 0..2^32-1 as one int (and no negative seed), as torch does."""
MAX_BOOTSTRAP = 1_000_000
"""Most bootstrap resamples per job: ~69 MiB by bootstrap_bytes, and every resample is a row of bootstrap.csv
that camvis-aggregate reads back for every job."""


def validate_values(cfg: JobConfig) -> list[str]:
    """Checks beyond types: ranges and cross-field rules."""
    errors = [p for p in (name_problem(key, getattr(cfg, key)) for key in ("experiment", "name", "group")) if p]
    if cfg.replicate < 1:
        errors.append(f"replicate must be >= 1, got {cfg.replicate}")
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    if d.fold < 1:
        errors.append(f"data.fold must be >= 1 (folds are 1-based), got {d.fold}")
    if d.stage is not None and (problem := stage_problem(d.stage)):
        errors.append(problem)
    errors.extend(factor_problems(d.factors))
    if m.align_features and not factors_double(d.factors):
        errors.append(
            f"model.align_features needs data.factors that are consecutive powers of 2 "
            f"(e.g. [2, 4, 8, 16, 32]), got {list(d.factors)}"
        )
    if m.size_hidden < 1:
        errors.append(f"model.size_hidden must be >= 1, got {m.size_hidden}")
    for key, value in (("train.batch_size", t.batch_size), ("train.max_epochs", t.max_epochs),
                       ("eval.batch_size", e.batch_size)):
        if value < 1:
            errors.append(f"{key} must be >= 1, got {value}")
    if not 0 < t.lr <= MAX_LR:  # Adam's step is about lr: far above 1 it overflows to inf, then NaN
        errors.append(f"train.lr must be in (0, {MAX_LR:g}], got {t.lr}")
    if not 0 <= t.min_lr < t.lr:
        errors.append(f"train.min_lr must be in [0, train.lr={t.lr}), got {t.min_lr}")
    if not 0 < t.inner_fraction < 1:
        errors.append(f"train.inner_fraction must be in (0, 1), got {t.inner_fraction}")
    if t.plateau_patience < 0:
        errors.append(f"train.plateau_patience must be >= 0, got {t.plateau_patience}")
    if t.threads != "auto" and t.threads < 1:
        errors.append(f"train.threads must be 'auto' or an int >= 1, got {t.threads}")
    if t.epoch_patches is not None and t.epoch_patches < 1:
        errors.append(f"train.epoch_patches must be >= 1 or null, got {t.epoch_patches}")
    for key, seed in (("train.seed", t.seed), ("eval.seed", e.seed)):
        if not 0 <= seed <= MAX_SEED:
            errors.append(f"{key} must be in [0, {MAX_SEED}] (the seeds numpy's generators take), got {seed}")
    if e.bootstrap < 0:
        errors.append(f"eval.bootstrap must be >= 0, got {e.bootstrap}")
    elif e.bootstrap > MAX_BOOTSTRAP:
        errors.append(f"eval.bootstrap must be at most {MAX_BOOTSTRAP:,} resamples (a job keeps every one), got "
                      f"{e.bootstrap:,}: ~{bootstrap_bytes(e.bootstrap) / 2**30:.3g} GiB of memory")
    if not 0 < e.confidence < 1:
        errors.append(f"eval.confidence must be in (0, 1), got {e.confidence}")
    return errors


def bootstrap_bytes(n: int) -> int:
    """Memory the evaluation needs for `n` resamples: it keeps every one (3 metrics, float64) and
    copies them twice (the bootstrap.csv frame and the percentile sort); see camvis.metrics.bootstrap."""
    return n * 3 * 8 * 3  # resamples x metrics (loss, acc, f1) x float64 x (arrays + two copies)


def name_problem(key: str, value: Any) -> str | None:
    """None if `value` is a file-system-safe name (it becomes a folder under outputs/ and jobs/), else why not."""
    if isinstance(value, str) and SAFE_NAME.fullmatch(value) and len(value) <= MAX_NAME_LENGTH:
        return None
    return (f"{key}: expected a file-system-safe name (letters, digits, _ . -, starting with a letter or digit, "
            f"at most {MAX_NAME_LENGTH} characters), got {value!r}")


def check_name(key: str, value: Any) -> str:
    """`value` if it is a file-system-safe name, else a ConfigError naming `key`."""
    problem = name_problem(key, value)
    if problem:
        raise ConfigError(problem)
    return value


def factor_problems(factors: tuple[int, ...]) -> list[str]:
    """data.factors' own rules (the store's levels are camvis.data.store_info.missing_levels')."""
    problems = []
    if not factors:
        problems.append("data.factors must name at least one level, got []")
    if any(f < 1 for f in factors):
        problems.append(f"data.factors must be positive integers, got {list(factors)}")
    if len(set(factors)) != len(factors):
        problems.append(f"data.factors must not repeat a factor, got {list(factors)}")
    return problems


def factors_double(factors: tuple[int, ...]) -> bool:
    """True for consecutive powers of 2 in increasing order, e.g. (2, 4, 8)."""
    first = factors[0] if factors else 0
    return first >= 1 and first & (first - 1) == 0 and all(b == 2 * a for a, b in zip(factors, factors[1:]))


# --------------------------------------------------------------------------- output


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), ready for YAML/JSON: json_copy(dataclasses.asdict(cfg)),
    built directly (asdict deep-copies every field: seconds over the configs of a 5,000-job grid)."""
    out = {}
    for name in _field_names(type(cfg)):
        value = getattr(cfg, name)
        out[name] = value if type(value) in _ATOMS else _plain(value)
    return out


_ATOMS = frozenset((str, int, float, bool, type(None)))


def _plain(value: Any) -> Any:
    """What json_copy gives back for a config field's value that is not an exact JSON atom: a list for
    a tuple or list of atoms, to_dict for a nested config, json_copy itself for anything else."""
    kind = type(value)
    if kind in (tuple, list) and all(type(v) in _ATOMS for v in value):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return json_copy(value)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


TRAIN_SECTIONS = ("data", "model", "train")
"""What the trained weights depend on (train_hash); `eval` only changes the evaluation of them.
(eval.batch_size also sets validation's forward batch: speed only, the model is in eval mode.)"""


def config_hash(cfg: JobConfig) -> str:
    """Hash of what determines a job's result (data, model, train, eval), not of its name."""
    return sections_hash(to_dict(cfg), tuple(SECTIONS))


def train_hash(cfg: JobConfig) -> str:
    """Hash of what training depends on (data, model, train): checkpoints resume only under it."""
    return sections_hash(to_dict(cfg), TRAIN_SECTIONS)


def eval_hash(cfg: JobConfig) -> str:
    """Hash of the eval section alone: a change re-evaluates the same weights."""
    return sections_hash(to_dict(cfg), ("eval",))


NOT_HASHED = {"data": ("stage",), "train": ("compile", "fused_adam", "threads")}
"""Keys that change where a job reads its inputs from or how fast it computes, not what: left out of every
hash, so a staged store or a compiled model keeps the job's train_hash (and configs from before the keys
keep theirs; a checkpoint resumes whatever the speed-ups)."""


def sections_hash(config: Mapping[str, Any], sections: tuple[str, ...]) -> str:
    """Hash of some sections of a plain config dict (to_dict's), e.g. one recorded in a checkpoint."""
    payload = {name: _hashed(name, config.get(name)) for name in sections}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _hashed(section: str, value: Any) -> Any:
    if not isinstance(value, Mapping) or section not in NOT_HASHED:
        return value
    return {k: v for k, v in value.items() if k not in NOT_HASHED[section]}


def stage_problem(value: str) -> str | None:
    """Why data.stage cannot name a node-local folder, before its variables are expanded on the node
    (camvis.data.stage.resolve_root checks the rest there): None if it can."""
    if not value.strip():
        return f"data.stage: expected an absolute folder path or null, got {value!r}"
    if not (value.startswith("/") or re.match(r"\$(\{\w+\}|\w+)", value)):
        return (f"data.stage: expected an absolute path or one starting with an environment variable "
                f"($TMPDIR, ${{SCRATCH}}/x), got the relative path {value!r}: a job's working directory "
                "is not node-local")
    return None


def job_dir(cfg: JobConfig, outputs: str | Path = "outputs") -> Path:
    """Where a job writes everything: outputs/<experiment>/<name>/, checked to lie under `outputs`."""
    return under_root(Path(outputs), check_name("experiment", cfg.experiment), check_name("name", cfg.name))


def experiment_dir(experiment: str, outputs: str | Path = "outputs") -> Path:
    """outputs/<experiment>/ (camvis-aggregate writes there), checked to lie under `outputs`."""
    return under_root(Path(outputs), check_name("experiment", experiment))


def under_root(root: Path, *names: str) -> Path:
    """root/names..., or a ConfigError if it resolves (symlinks followed) outside `root`."""
    path = root.joinpath(*names)
    resolved, top = path.resolve(), root.resolve()
    if resolved == top or not resolved.is_relative_to(top):
        raise ConfigError(f"{path}: resolves to {resolved}, outside the outputs root {top}; "
                          f"remove the symbolic link or choose another --outputs")
    return path
