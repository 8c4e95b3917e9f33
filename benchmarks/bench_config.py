"""The config-library trial (issue 22): camvis/config.py's hand-written type checks against the same module
with them done by pydantic v2 or by msgspec, each variant built here from today's config.py.

    .venv/bin/pip install pydantic==2.14.3 msgspec==0.22.0    # the trial's libraries, not camvis dependencies
    .venv/bin/python benchmarks/bench_config.py                # 15 repeats, prints the JSON
    .venv/bin/python benchmarks/bench_config.py --repeats 30 --json benchmarks/results/config.json

A variant is a copy of the camvis package whose config.py has one span replaced by the library's glue
(VARIANTS: from its start line to `def _type_name(`); everything else (unknown keys with did-you-mean,
every problem collected, ranges and cross-field rules, the YAML loader, the type names of the errors and
of docs/configuration.md) stays hand-written in every variant. Per variant:
- `lines`: lines of its config.py (the glue included);
- `import_cpu_ms`, `first_config_cpu_ms`: CPU time (user + system) of a fresh interpreter that imports
  camvis.config (then validates one config: pydantic builds its models there), over an empty interpreter's,
  min and median of the repeats. CPU time, not wall time: on a shared machine wall time grows with the load;
- `importtime_us`: `python -X importtime -c "import camvis.config"`'s cumulative figure, min and median
  (wall time: it grows with the load, recorded as load_avg);
- `full_config_us`, `grid_point_us`: microseconds per job_config_from_dict of a full config and per
  section_from_dict of one key (what each point of a 5,000-job grid costs), best of 5;
- `errors`: the message of each bad config in CASES, `same_errors`: identical to today's, and `differs`:
  how many (field, value) pairs of every config class validate to a different value, type or message.
"""

from __future__ import annotations

NEEDS = """needs: nothing for today's code; a variant whose library is not installed is skipped (see above).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ".venv/bin/pip install pydantic==2.14.3 msgspec==0.22.0"  # the versions of benchmarks/results/config.json
END = "def _type_name("

PYDANTIC = '''    known = {k: v for k, v in value.items() if k in hints}
    try:
        checked, bad = _model(cls).model_validate(known), set()
    except pydantic.ValidationError as e:
        bad = {err["loc"][0] for err in e.errors()}
        checked = _model(cls).model_validate({k: v for k, v in known.items() if k not in bad})
    for key, item in value.items():
        if key not in hints:
            errors.append(unknown_key_message(str(key), hints, prefix=f"{section}."))
        elif key in bad:
            errors.append(f"{section}.{key}: expected {_type_name(hints[key])}, got {type(item).__name__} {item!r}")
    return cls(**{k: getattr(checked, k) for k in known})


def _check_type(key: str, value: Any, expected: Any, errors: list[str]) -> Any:
    """Return `value` coerced to `expected` (int -> float, list -> tuple) or record an error."""
    try:
        return _adapter(expected).validate_python(value)
    except pydantic.ValidationError:
        errors.append(f"{key}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
        return value


_STRICT = pydantic.ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


@functools.cache
def _adapter(expected: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(_lenient(expected), config=_STRICT)


@functools.cache
def _model(cls: type) -> type[pydantic.BaseModel]:
    """A strict pydantic model of the dataclass `cls`'s fields (no "3" -> 3, no 1 -> True), built once."""
    hints = _field_types(cls)
    return pydantic.create_model(cls.__name__, __config__=_STRICT, **{
        f.name: (_lenient(hints[f.name]), f.default if f.default_factory is dataclasses.MISSING
                 else pydantic.Field(default_factory=f.default_factory)) for f in dataclasses.fields(cls)})


def _lenient(expected: Any) -> Any:
    """`expected` with what strict mode refuses but a YAML config means: a list (or one item) for a tuple,
    text for a float (YAML reads 1e-4 as text), any keys in a mapping (checked later)."""
    origin = typing.get_origin(expected)
    if origin is dict:
        return dict
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_lenient(a) for a in typing.get_args(expected))]
    if origin is tuple:
        return Annotated[tuple[_lenient(typing.get_args(expected)[0]), ...], pydantic.BeforeValidator(_as_tuple)]
    if expected is float:
        return Annotated[float, pydantic.BeforeValidator(_float_text)]
    return expected


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _float_text(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


'''

MSGSPEC = '''def _coerce(value: Any, expected: Any) -> tuple[bool, Any]:
    """(ok, value converted) by msgspec's strict conversion, after YAML's leniencies (_yaml_value)."""
    value = _yaml_value(value, expected)
    try:
        converted = msgspec.convert(value, _convertible(expected), strict=True)
    except msgspec.ValidationError:
        return False, value
    return non_finite(converted) is None, converted


def _yaml_value(value: Any, expected: Any) -> Any:
    """What strict conversion refuses but a YAML config means: one item for a one-item list, text for a
    float (YAML reads 1e-4, without a dot, as text)."""
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    if float in options and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if any(typing.get_origin(o) is tuple for o in options) and not isinstance(value, (list, tuple, type(None))):
        return [value]
    return value


@functools.cache
def _convertible(expected: Any) -> Any:
    """`expected` with any keys allowed in a mapping (their own checks come later)."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_convertible(a) for a in typing.get_args(expected))]
    return dict if typing.get_origin(expected) is dict else expected


'''

# name: (library, first line of the span replaced up to END, its replacement, import lines added)
VARIANTS = {
    "hand-written": (None, None, "", ""),
    "pydantic": ("pydantic", "    kwargs = {}\n    for key, item in value.items():", PYDANTIC,
                 "import pydantic\nfrom typing import Annotated\n"),
    "msgspec": ("msgspec", "def _coerce(", MSGSPEC, "import msgspec\n"),
}

CASES = {
    "unknown key, typo": {"model": {"align_feature": True}},
    "unknown top-level key": {"experimnt": "x"},
    "wrong type (int)": {"train": {"max_epochs": "three"}},
    "bool where int": {"train": {"batch_size": True}},
    "not one of the literals": {"train": {"selection_metric": "auc"}},
    "int or 'auto'": {"train": {"threads": "many"}},
    "float from text": {"train": {"lr": "fast"}},
    "null where int": {"data": {"fold": None}},
    "list item": {"data": {"factors": [2, "four", 8]}},
    "section not a mapping": {"model": 5},
    "out of bounds": {"train": {"lr": -1.0}},
    "bound in thousands": {"eval": {"bootstrap": 2_000_000}},
    "two problems at once": {"data": {"fold": 0}, "eval": {"confidence": 2.0}},
    "type and unknown keys at once": {"train": {"lr": [1], "batchsize": 8}, "bogus": 1},
}

VALUES = [0, 1, -1, 3, 2**70, True, False, None, 0.5, 1.0, -2.5, float("nan"), float("inf"), "1e-4", "3", "abc",
          "auto", "true", "inner", "acc", "", [], [1, 2], [2, "x"], (1, 2), [1.5], ["a", "b"], {}, {"a": 1},
          {1: "x"}, [True], ["nan"], [None], "nan", "-inf", b"x"]


def build(name: str, folder: Path) -> Path | str:
    """A copy of the camvis package with variant `name`'s config.py under `folder`, or why not."""
    library, start, glue, imports = VARIANTS[name]
    if library and importlib.util.find_spec(library) is None:
        return f"{library} is not installed: {INSTALL}"
    shutil.copytree(ROOT / "camvis", folder / "camvis", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    path = folder / "camvis" / "config.py"
    text = path.read_text()
    if start:
        if text.count(start) != 1 or END not in text or "\nimport yaml\n" not in text:
            return f"camvis/config.py no longer has one {start!r} ... {END!r} span: update VARIANTS"
        text = text[:text.index(start)] + glue + text[text.index(END):]
        text = text.replace("\nimport yaml\n", f"\n{imports}import yaml\n", 1)
    path.write_text(text)
    return folder


def cpu_ms(code: str, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=env["PYTHONPATH"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def importtime_us(env: dict[str, str]) -> int:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import camvis.config"], env=env,
                         cwd=env["PYTHONPATH"], capture_output=True, text=True, check=True).stderr
    return int([line for line in err.splitlines() if line.rstrip().endswith("| camvis.config")][-1].split("|")[1])


def spread(values: list[float], minus: list[float] | None = None) -> dict[str, float]:
    low, mid = min(values), statistics.median(values)
    if minus:
        low, mid = low - min(minus), mid - statistics.median(minus)
    return {"min": round(low, 1), "median": round(mid, 1)}


FIRST = "import camvis.config as c; c.load_job_config(None, ['data.factors=[2,4]'])"


def env_of(folder: Path) -> dict[str, str]:
    """The variant's copy first on sys.path (-c puts the working folder first, a script its own, then PYTHONPATH)."""
    return {**os.environ, "PYTHONPATH": str(folder)}


def timings(folders: dict[str, Path], repeats: int) -> dict[str, dict]:
    """Per variant: CPU ms of the import and of the first config over an empty interpreter's, and -X importtime.
    The variants take turns within each repeat, so that a change of the machine's load hits them all alike."""
    runs: dict[str, dict[str, list[float]]] = {name: {"empty": [], "import": [], "first": [], "importtime": []}
                                               for name in folders}
    for folder in folders.values():
        cpu_ms(FIRST, env_of(folder))  # writes the copy's __pycache__: no repeat compiles
    for _ in range(repeats):
        for name, folder in folders.items():
            env, run = env_of(folder), runs[name]
            run["empty"].append(cpu_ms("pass", env))
            run["import"].append(cpu_ms("import camvis.config", env))
            run["first"].append(cpu_ms(FIRST, env))
            run["importtime"].append(importtime_us(env))
    return {name: {"import_cpu_ms": spread(run["import"], run["empty"]),
                   "first_config_cpu_ms": spread(run["first"], run["empty"]),
                   "importtime_us": spread(run["importtime"])} for name, run in runs.items()}


def figures(folder: Path) -> dict:
    """The worker's in-process figures of the variant in `folder`."""
    worker = subprocess.run([sys.executable, __file__, "--worker"], env=env_of(folder), capture_output=True, text=True,
                            check=True)
    found = json.loads(worker.stdout)
    if Path(file := found.pop("file")).parent.parent != folder:
        raise RuntimeError(f"the worker imported camvis.config from {file}, not from {folder}")
    return found


def worker() -> dict:
    """In-process figures of the camvis.config found first on sys.path (the variant's copy)."""
    import camvis.config as c
    from camvis.cluster.slurm_settings import SlurmSettings
    from camvis.cluster.store_settings import BuildSlurm, StoreSection
    from camvis.errors import ConfigError

    errors = {}
    for what, raw in CASES.items():
        try:
            c.job_config_from_dict(raw, "job.yaml")
            errors[what] = "(accepted)"
        except ConfigError as e:
            errors[what] = str(e)
    outcomes = []  # every (class, field, value): what validation gives
    for section, cls in [*c.SECTIONS.items(), ("slurm", SlurmSettings), ("store", StoreSection),
                         ("store.slurm", BuildSlurm)]:
        for name in c._field_types(cls):
            for value in VALUES:
                problems: list[str] = []
                got = getattr(c.section_from_dict(cls, section, {name: value}, problems), name)
                outcomes.append(f"{section}.{name}={value!r}: {got!r} {type(got).__name__} {problems}")
    full = c.to_dict(c.JobConfig())
    return {"file": c.__file__, "lines": len(Path(c.__file__).read_text().splitlines()),
            "full_config_us": best_us(lambda i: c.job_config_from_dict(full, "x"), 2000),
            "grid_point_us": best_us(lambda i: c.section_from_dict(c.TrainConfig, "train", {"seed": i}, []), 5000),
            "errors": errors, "outcomes": outcomes}


def best_us(call, n: int) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            call(i)
        times.append((time.perf_counter() - start) / n * 1e6)
    return round(min(times), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker()))
        return 0
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_config_") as tmp:
        built = {name: build(name, Path(tmp) / name) for name in VARIANTS}
        folders = {name: folder for name, folder in built.items() if isinstance(folder, Path)}
        timed = timings(folders, args.repeats)
        variants = {name: {**timed[name], **figures(folder)} if isinstance(folder, Path) else {"skipped": folder}
                    for name, folder in built.items()}
    today = variants["hand-written"]
    today_outcomes = today["outcomes"]
    for name, v in variants.items():
        if "outcomes" in v:
            outcomes = v.pop("outcomes")
            v["differs"] = sum(a != b for a, b in zip(outcomes, today_outcomes, strict=True))
            v["cases"] = len(outcomes)
            v["same_errors"] = v["errors"] == today["errors"]
            library = VARIANTS[name][0]
            v["library"] = f"{library} {importlib.metadata.version(library)}" if library else None
    result = {"benchmark": "camvis.config: hand-written type checks vs pydantic / msgspec", "repeats": args.repeats,
              "load_avg": [round(x, 1) for x in load], "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "variants": variants}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
