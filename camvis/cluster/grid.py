"""Experiment grids: a YAML file -> validated job specs with stable names and config hashes.

A grid names the experiment, a base job config, the axes to expand and the SLURM resources:

    experiment: cat_vs_align
    folds: 9                  # views of the store; only needed while the store is not built
    base: {data: {store: data/processed/camvis2.zarr}, model: {size_hidden: 128}}
    axes:
      fold: all               # or [1, 3]; 'all' = every view of data.store
      group:                  # named variants, each setting several keys
        cat: {model.align_features: false}
        align: {model.align_features: true}
      train.lr: [1.0e-3, 1.0e-4]   # plain axes: cartesian product
    slurm: {time: 240, gpus_per_node: 1, array_parallelism: 8}
    store: {raw: data/raw, workers: 8}   # optional: how data.store is built when missing

`fold: all` takes the views from the store's root attributes (zarr.json). While the store is
not built yet it needs the `folds: N` hint; once it exists the store decides, and a `folds`
that disagrees with it is an error (so is a fold or a factor the store does not have).
Without a group axis the group is "default"; without a fold axis the base's data.fold.

Jobs are named "{group}_fold{k}" plus "_{key}{value}" per plain axis ("cat_fold3_lr0.001").

Replicates: `replicates: N` (top level, default 1) trains each grid point N times, replicate r with
train.seed = (the point's train.seed) + r - 1, named with "_rep{r}" when N > 1 ("cat_fold3_rep2").
A plain `train.seed` axis means the same: its values are the replicates' seeds, in order (r = 1..N),
and the jobs are named "_rep{r}", not "_seed{v}". Each job's config (and its scores.json) carries
`replicate: r` (1 without replicates); the aggregate pools a point's replicates, never treats them
as groups.

Every problem is collected into one ConfigError naming the grid file and the key. No torch
here: the launcher runs on login nodes.

Elsewhere: the `slurm:` section's settings in camvis.cluster.slurm_settings, the `store:` section's in
camvis.cluster.store_settings, the store's views and
levels in camvis.data.store_info, which jobs to run (skip finished, resubmit the rest) in camvis.cluster.plan.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from camvis import config as cfgmod
from camvis.config import JobConfig, config_hash, set_dotted, unknown_key_message
from camvis.errors import ConfigError
from camvis.io import json_copy
from camvis.cluster.site_options import load_profile
from camvis.cluster.slurm_settings import SlurmSettings, parse_slurm_settings
from camvis.cluster.store_settings import StoreBuild, parse_store_section
from camvis.data.store_info import StoreInfo

GRID_KEYS = ("experiment", "description", "folds", "replicates", "base", "axes", "slurm", "store")
IDENTITY_KEYS = ("experiment", "name", "group", "replicate")
SEED_AXIS = "train.seed"  # a plain axis over it means replicates
DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class JobSpec:
    """One grid point: a fully resolved job config with its identity."""

    name: str
    group: str
    fold: int
    view: str | None
    axes: dict[str, Any]      # plain axis key -> value of this job
    config: JobConfig
    hash: str
    replicate: int = 1  # 1..N of the grid's replicates (camvis.config.JobConfig.replicate)


@dataclass(frozen=True)
class Grid:
    path: Path
    experiment: str
    description: str
    jobs: tuple[JobSpec, ...]
    slurm: SlurmSettings
    views: tuple[str, ...] | None  # of the base store; None while it is not built
    overrides: tuple[str, ...] = ()
    store: StoreBuild | None = None  # how the base's data.store is made (the `store:` section)

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.jobs]

    @property
    def replicates(self) -> int:
        """Training seeds per group x fold point (the grid's `replicates`, or its train.seed axis's length)."""
        return max((j.replicate for j in self.jobs), default=1)


# --------------------------------------------------------------------------- loading


def load_grid(path: str | Path, overrides: Sequence[str] = (), profile: str | Path | None = None) -> Grid:
    """Read, override and expand a grid file; one ConfigError lists every problem."""
    path = Path(path)
    raw = cfgmod.load_yaml(path)
    if profile is not None:
        raw = _with_profile(raw, profile)
    raw = apply_grid_overrides(raw, overrides, str(path))
    return expand(raw, path, tuple(overrides))


def _with_profile(raw: dict[str, Any], profile: str | Path) -> dict[str, Any]:
    """A site profile (a YAML file with a `slurm:` section) sits under the grid's slurm keys; setup lines
    add up (the profile's, then the grid's). The command line's overrides come after both:
    `slurm.setup=[...]` replaces the whole list, `slurm.setup+=[...]` appends to it."""
    site, own = load_profile(profile), raw.get("slurm") or {}
    slurm = {**site, **own, "additional": {**(site.get("additional") or {}), **(own.get("additional") or {})}}
    if isinstance(site.get("setup"), list) and isinstance(own.get("setup"), list):
        slurm["setup"] = [*site["setup"], *own["setup"]]  # the site's module loads, then the grid's lines
    return {**raw, "slurm": slurm}


def apply_grid_overrides(raw: Mapping[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """`slurm.time=30` goes to slurm, `experiment=x`/`folds=9` to the top, other keys to base."""
    result = json_copy(raw)
    axis_keys = _axis_keys(result.get("axes"))
    for text in overrides:
        key, append, value = cfgmod.split_override(text)
        top = key.split(".", 1)[0]
        if key in ("experiment", "description", "folds", "replicates") or top in ("slurm", "store"):
            cfgmod.set_override(result, key, append, value, text)
            continue
        if top == "base":
            key = key.split(".", 1)[1] if "." in key else ""
        problem = _check_dotted_key(key)
        if problem:
            raise ConfigError(f"override {text!r}: {problem}")
        if key in axis_keys:
            raise ConfigError(f"override {text!r}: {key} is set by {axis_keys[key]} of {source}, which wins over "
                              f"the base; select jobs with --only instead (e.g. --only {_only_hint(key, value, axis_keys[key])})")
        base = result.setdefault("base", {})
        if not isinstance(base, dict):
            raise ConfigError(f"{source}: base: expected a mapping, got {type(base).__name__}")
        cfgmod.set_override(base, key, append, value, text)
    return result


def _only_hint(key: str, value: Any, axis: str) -> str:
    if key == "data.fold":
        return f"fold={value}"
    if axis.startswith("axes.group."):
        return f"group={axis.rsplit('.', 1)[-1]}"
    return f"{key}={value}"


def _axis_keys(axes: Any) -> dict[str, str]:
    """Dotted keys that the axes set, -> which axis sets them (for override errors)."""
    if not isinstance(axes, dict):
        return {}
    keys = {"data.fold": "axes.fold"} if "fold" in axes else {}
    groups = axes.get("group")
    if isinstance(groups, dict):
        for name, settings in groups.items():
            for key in _flatten(settings if isinstance(settings, dict) else {}):
                keys.setdefault(key, f"axes.group.{name}")
    for key in axes:
        if key not in ("fold", "group"):
            keys[str(key)] = f"axes.{key}"
    return keys


# --------------------------------------------------------------------------- expansion


def expand(raw: Mapping[str, Any], path: Path, overrides: tuple[str, ...] = ()) -> Grid:
    errors: list[str] = []
    _check_top(raw, errors)
    slurm = parse_slurm_settings(raw.get("slurm"), errors)
    base = _base(raw.get("base"), errors)
    axes = raw.get("axes")
    if axes is not None and not isinstance(axes, dict):
        errors.append(f"axes: expected a mapping, got {type(axes).__name__} {axes!r}")
        axes = {}
    elif axes == {} or ("axes" in raw and axes is None):
        errors.append("axes: empty; give at least one axis (e.g. fold: all) or leave axes out for one job")
    axes = axes or {}
    base_cfg = _validate(base, "base", errors)
    if base_cfg is None:  # nothing below can be checked without a valid base
        raise _grid_error(path, errors)
    stores = StoreInfo.cache()
    info = stores(base_cfg.data.store, errors)
    folds = _folds(axes, raw.get("folds"), base_cfg, info, errors)
    groups = _groups(axes.get("group"), base, errors)
    plain = _plain_axes(axes, base_cfg, errors)
    _check_axes_disjoint(groups, plain, errors)
    seeds = _replicates(raw.get("replicates"), plain.pop(SEED_AXIS, None), errors)
    if errors:
        raise _grid_error(path, errors)
    jobs = _jobs(str(raw.get("experiment")), base_cfg, folds, groups, plain, stores, errors, seeds)
    store = parse_store_section(raw.get("store"), base_cfg.data.store, slurm, [j.config.data.factors for j in jobs],
                                errors)
    if errors:
        raise _grid_error(path, errors)
    views = info.views if info else None
    return Grid(path, str(raw.get("experiment")), str(raw.get("description") or ""), tuple(jobs), slurm, views,
                overrides, store)


def _grid_error(path: Path, errors: list[str]) -> ConfigError:
    return cfgmod.collected_error(str(path), errors)


def _check_top(raw: Mapping[str, Any], errors: list[str]) -> None:
    for key in raw:
        if key not in GRID_KEYS:
            errors.append(unknown_key_message(str(key), list(GRID_KEYS)))
    experiment = raw.get("experiment")
    if experiment is None:
        errors.append("experiment: missing; name the experiment (outputs go to outputs/<experiment>/)")
    elif cfgmod.name_problem("experiment", experiment):
        errors.append(cfgmod.name_problem("experiment", experiment))
    folds = raw.get("folds")
    if folds is not None and (not isinstance(folds, int) or isinstance(folds, bool) or folds < 1):
        errors.append(f"folds: expected the number of views of the store (an int >= 1), got {folds!r}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        errors.append(f"description: expected a string, got {type(description).__name__}")


def _base(base: Any, errors: list[str]) -> dict[str, Any]:
    if base is None:
        return {}
    if not isinstance(base, dict):
        errors.append(f"base: expected a mapping (data, model, train, eval), got {type(base).__name__}")
        return {}
    for key in IDENTITY_KEYS:
        if key in base:
            errors.append(f"base.{key}: set by the grid (experiment, job name, group); remove it from base")
    return {k: v for k, v in base.items() if k not in IDENTITY_KEYS}


def _validate(raw: Mapping[str, Any], where: str, errors: list[str]) -> JobConfig | None:
    """A JobConfig from `raw`, or None with each problem recorded as '<where>: <problem>'."""
    try:
        return cfgmod.job_config_from_dict(raw, where)
    except ConfigError as e:
        errors.extend(f"{where}: {p}" for p in e.problems)
        return None


# The dotted keys a grid may set: section.field of JobConfig.
KNOWN_KEYS: dict[str, dict[str, Any]] = {
    name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in cfgmod.SECTIONS.items()
}


def _check_dotted_key(key: str) -> str | None:
    """None for a known `section.field` key, else an error with a did-you-mean hint."""
    section, _, leaf = key.partition(".")
    if section not in KNOWN_KEYS or not leaf:
        flat = [f"{s}.{f}" for s, fields in KNOWN_KEYS.items() for f in fields]
        close = [k for k in flat if k.endswith("." + key)]  # "lr" -> "train.lr"
        if close:
            return f"{key}: unknown key (did you mean {close[0]}?)"
        return unknown_key_message(key, flat)
    if leaf not in KNOWN_KEYS[section]:
        return unknown_key_message(leaf, KNOWN_KEYS[section], prefix=f"{section}.")
    return None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{model: {use_mlp: true}, train.lr: 1} -> {"model.use_mlp": True, "train.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and str(dotted) in KNOWN_KEYS:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[str(dotted)] = value
    return flat


def _merged(base: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    result = json_copy(base)
    for key, value in settings.items():
        set_dotted(result, key, value)
    return result


def _derive(cfg: JobConfig, flat: Mapping[str, Any], where: str, errors: list[str],
            **identity: str) -> JobConfig | None:
    """`cfg` (valid) with the known dotted keys of `flat` set, or None with each problem recorded as
    '<where>: <problem>': the config and the problems that _validate(_merged(raw, flat)) gives, but only
    the keys set are coerced (the rest of `cfg` is valid already; a key's check does not depend on
    the others), then the cross-field rules run on the result. A grid point costs microseconds, not
    a whole validation: 5,000-job grids."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for section, fields in _by_section(flat).items():
        checked = cfgmod.section_from_dict(cfgmod.SECTIONS[section], section, fields, problems)
        sections[section] = _replaced(getattr(cfg, section), {k: getattr(checked, k) for k in fields})
    if not problems:
        derived = _replaced(cfg, {**sections, **identity})
        problems = cfgmod.validate_values(derived)
        if not problems:
            return derived
    errors.extend(f"{where}: {p}" for p in problems)
    return None


def _replaced(obj: Any, changes: Mapping[str, Any]) -> Any:
    """dataclasses.replace(obj, **changes) for the frozen config classes, whose __init__ only stores
    the fields (`changes`: field names, values checked): the instance's dict copied, not __init__
    re-run through every field (a fifth of a 5,000-job expansion). A class with __post_init__ or
    __slots__ goes through dataclasses.replace."""
    cls = type(obj)
    if hasattr(cls, "__post_init__") or hasattr(cls, "__slots__"):
        return dataclasses.replace(obj, **changes)
    new = object.__new__(cls)
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


def _by_section(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"train.lr": 1, "data.fold": 2} -> {"train": {"lr": 1}, "data": {"fold": 2}} (keys checked known)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, leaf = key.partition(".")
        sections.setdefault(section, {})[leaf] = value
    return sections


# --------------------------------------------------------------------------- axes


def _folds(axes: Mapping[str, Any], hint: Any, base: JobConfig, info: StoreInfo | None,
           errors: list[str]) -> list[int]:
    spec = axes.get("fold", None)
    count = len(info.views) if info else (hint if isinstance(hint, int) else None)
    if info and isinstance(hint, int) and hint != len(info.views):
        errors.append(f"folds: {hint}, but store {base.data.store} has {len(info.views)} views "
                      f"({', '.join(info.views)})")
    if spec is None:
        folds = [base.data.fold]
    elif spec == "all":
        if count is None:
            errors.append(f"axes.fold: 'all' needs the store's views, but {base.data.store} does not exist yet; "
                          f"build it (camvis-data build) or add 'folds: N' (its number of views) to the grid")
            return []
        folds = list(range(1, count + 1))
    else:
        items = spec if isinstance(spec, list) else [spec]
        if not items or not all(isinstance(k, int) and not isinstance(k, bool) for k in items):
            errors.append(f"axes.fold: expected 'all' or a non-empty list of fold numbers (1-based), got {spec!r}")
            return []
        folds = list(dict.fromkeys(items))
    bad = [k for k in folds if k < 1 or (count is not None and k > count)]
    if bad:
        where = f"store {base.data.store} has {count} views (folds 1..{count})" if info else \
            (f"folds: {count} (1..{count})" if count else "folds are 1-based")
        errors.append(f"axes.fold: fold(s) {bad} out of range; {where}")
    return folds


def _groups(spec: Any, base: Mapping[str, Any], errors: list[str]) -> dict[str, dict[str, Any]]:
    """Named variants -> their flat settings; each one validated on top of the base."""
    if spec is None:
        return {DEFAULT_GROUP: {}}
    if not isinstance(spec, dict) or not spec:
        errors.append(f"axes.group: expected a non-empty mapping of group name -> settings, got {spec!r}")
        return {}
    groups: dict[str, dict[str, Any]] = {}
    for name, settings in spec.items():
        where = f"axes.group.{cfgmod.printable(name)}"
        if cfgmod.name_problem(where, name):
            errors.append(cfgmod.name_problem(where, name))
            continue
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            errors.append(f"{where}: expected a mapping of dotted keys to values, got {settings!r}")
            continue
        flat = _flatten(settings)
        bad = [_check_group_key(k) for k in flat]
        errors.extend(f"{where}: {p}" for p in bad if p)
        if not any(bad) and _validate(_merged(base, flat), where, errors) is not None:
            groups[name] = flat
    return groups


def _check_group_key(key: str) -> str | None:
    if key in ("data.fold", *IDENTITY_KEYS):
        return f"{key}: set by the grid itself (axes.fold, job names); a group cannot set it"
    return _check_dotted_key(key)


def _replicates(count: Any, seed_axis: list[Any] | None, errors: list[str]) -> list[int | None]:
    """Per replicate r (1..N), its train.seed: a seed axis's value, or None for the point's own seed + r - 1."""
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        errors.append(f"replicates: expected the number of training seeds per group and fold (an int >= 1), "
                      f"got {count!r}")
        return [None]
    if seed_axis is not None:
        if count not in (None, 1):
            errors.append(f"replicates: {count}, but axes.{SEED_AXIS} also sets the seeds; give one of them "
                          f"(the seed axis means {len(seed_axis)} replicates)")
        return list(seed_axis)
    return [None] * (count or 1)


def _plain_axes(axes: Mapping[str, Any], base: JobConfig, errors: list[str]) -> dict[str, list[Any]]:
    plain: dict[str, list[Any]] = {}
    for key, values in axes.items():
        if key in ("fold", "group"):
            continue
        where = f"axes.{key}"
        problem = _check_group_key(str(key))
        if problem:
            errors.append(f"axes: {problem}")
            continue
        if not isinstance(values, list) or not values:
            errors.append(f"{where}: expected a non-empty list of values, got {values!r}")
            continue
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            errors.append(f"{where}: values repeat: {values!r}")
            continue
        ok = [_derive(base, {key: v}, f"{where}[{i}]", errors) is not None for i, v in enumerate(values)]
        if all(ok):
            plain[str(key)] = values
    return plain


def _check_axes_disjoint(groups: Mapping[str, Mapping[str, Any]], plain: Mapping[str, Any],
                         errors: list[str]) -> None:
    """A plain axis on a key a group sets would silently win over the group (two groups, one hash)."""
    for key in plain:
        setters = [name for name, settings in groups.items() if key in settings]
        if setters:
            errors.append(f"axes.{key}: also set by axes.group.{setters[0]}; the plain axis would override the "
                          f"group's value (the groups would train the same model): set {key} in one place")


def _jobs(experiment: str, base: JobConfig, folds: list[int], groups: dict[str, dict[str, Any]],
          plain: dict[str, list[Any]], stores: Callable[..., StoreInfo | None], errors: list[str],
          seeds: Sequence[int | None] = (None,)) -> list[JobSpec]:
    """The cartesian product group x fold x plain axes x replicates, in that order. Each group's config
    is derived once (validated by _groups), each job's from it by the keys its grid point sets (_derive)."""
    labels = _axis_labels(list(plain))
    jobs: list[JobSpec] = []
    seen: dict[str, str] = {}
    store_problems: dict[str, list[str]] = {}  # problem -> the jobs that have it (a base's bad factor: all)
    for group, settings in groups.items():
        group_cfg = _derive(base, settings, f"axes.group.{group}", errors)
        if group_cfg is None:
            continue
        for fold in folds:
            for combo, (r, seed) in itertools.product(itertools.product(*plain.values()), enumerate(seeds, 1)):
                values = dict(zip(plain, combo))
                name = job_name(group, fold, {labels[k]: v for k, v in values.items()}) + \
                    (f"_rep{r}" if len(seeds) > 1 else "")
                settings = {**values, "data.fold": fold}
                if len(seeds) > 1 or seed is not None:
                    settings[SEED_AXIS] = group_cfg.train.seed + r - 1 if seed is None else seed
                cfg = _derive(group_cfg, settings, f"job {name}", errors,
                              experiment=experiment, name=name, group=group, replicate=r)
                if cfg is None:
                    continue
                if name in seen:
                    errors.append(f"job {name}: two grid points get this name ({seen[name]} and {values}); "
                                  f"make the axis values distinct")
                seen[name] = str(values)
                info = stores(cfg.data.store, errors)
                found: list[str] = []
                view = info.check(cfg, "", found) if info else None
                for problem in found:
                    store_problems.setdefault(problem, []).append(name)
                jobs.append(JobSpec(name, group, fold, view, values, cfg, config_hash(cfg), r))
    for problem, names in store_problems.items():
        errors.append((f"job {names[0]}" if len(names) == 1 else f"jobs {names[0]} and {len(names) - 1} more")
                      + problem)
    return jobs


def _axis_labels(keys: list[str]) -> dict[str, str]:
    """The name part of each plain axis: its leaf ("lr"), or the dotted key when leaves clash."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (leaf if leaves.count(leaf) == 1 else k.replace(".", "-")) for k, leaf in zip(keys, leaves)}


def job_name(group: str, fold: int, parts: Mapping[str, Any] | None = None) -> str:
    """"cat_fold3", "cat_fold3_lr0.001_seed1": stable and file-system-safe."""
    name = f"{group}_fold{fold}"
    for label, value in (parts or {}).items():
        name += f"_{label}{_value_text(value)}"
    return name


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        text = "-".join(_value_text(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


# --------------------------------------------------------------------------- selection


def select(jobs: Iterable[JobSpec], only: Sequence[str] = ()) -> list[JobSpec]:
    """Jobs matching every `key=value` filter (name, group, fold, view, replicate or an axis key);
    repeating a key or a comma list (fold=1,3) means any of those values."""
    wanted: dict[str, set[str]] = {}
    for text in only:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--only {text!r}: expected key=value, e.g. --only group=cat --only fold=3")
        wanted.setdefault(key.strip(), set()).update(v.strip() for v in value.split(","))
    jobs = list(jobs)
    known = {"name", "group", "fold", "view", "replicate"} | {k for j in jobs for k in j.axes} | \
            {k.rsplit(".", 1)[-1] for j in jobs for k in j.axes}
    for key, values in wanted.items():
        if key not in known:
            raise ConfigError("--only " + unknown_key_message(key, sorted(known)))
        have = {_job_value(j, key) for j in jobs}
        missing = sorted(values - have)
        if missing:  # a typo would otherwise drop its value silently
            raise ConfigError(f"--only {key}={','.join(missing)}: the grid has no job with {key} "
                              f"{' or '.join(missing)}; its values: {', '.join(sorted(have, key=_natural))}")
    return [j for j in jobs if all(_job_value(j, k) in values for k, values in wanted.items())]


def _natural(text: str) -> tuple[int, int | str]:
    """Numbers in numeric order (fold 2 before 10), then words."""
    return (0, int(text)) if text.isdigit() else (1, text)


def _job_value(job: JobSpec, key: str) -> str:
    fixed = {"name": job.name, "group": job.group, "fold": str(job.fold), "view": str(job.view),
             "replicate": str(job.replicate)}
    if key in fixed:
        return fixed[key]
    for axis, value in job.axes.items():
        if key in (axis, axis.rsplit(".", 1)[-1]):
            return str(value)
    return ""
