"""The configuration reference page, docs/configuration.md, generated from the config classes.

    python -m camvis.cli.config_reference            # print the page
    python -m camvis.cli.config_reference --write    # write docs/configuration.md (make docs does)

One source: a key's meaning is the attribute docstring right under its field (read with ast), its type
the one the config errors name (camvis.config._type_name), its default the dataclass's. A field without
a docstring is an error. tests/test_docs.py fails when docs/configuration.md differs from this page.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camvis import config, site
from camvis.cli import fail, new_parser
from camvis.cluster.slurm_settings import SlurmSettings
from camvis.cluster.store_settings import BuildSlurm, StoreSection
from camvis.errors import CamvisError, ConfigError

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
COMMAND = "python -m camvis.cli.config_reference --write"


@dataclass(frozen=True)
class Section:
    """One table of the page: the keys `prefix.<field>` of `cls`."""

    title: str
    prefix: str              # "data." ; "" for top-level keys
    cls: type
    intro: str
    keys: tuple[str, ...] | None = None     # the fields shown (None: every one that is not a nested section)
    defaults: dict[str, Any] | None = None  # where the class has none (site.Site: resolved settings)


SECTIONS = (
    Section("Job config: identity", "", config.JobConfig,
            "The top-level keys of a job config (`camvis-train`, `camvis-eval`); a grid derives them for each "
            "of its jobs."),
    *(Section(f"`{name}`", f"{name}.", cls, f"The `{name}:` section of a job config, and of a grid's `base:`; "
              f"override one key as `{name}.KEY=VALUE`.")
      for name, cls in config.SECTIONS.items()),
    Section("`slurm`", "slurm.", SlurmSettings,
            "A grid's `slurm:` section and a site profile's (the profile under the grid; `setup` lines add up, "
            "the profile's first); override as `slurm.KEY=VALUE`, `slurm.setup+=[LINE]` to append."),
    Section("`store`", "store.", StoreSection,
            "A grid's optional `store:` section: how the base's `data.store` is built when it is missing "
            "(`camvis-launch` submits the build as a job the arrays wait for)."),
    Section("`store.slurm`", "store.slurm.", BuildSlurm,
            "The store build job's resources (`store.slurm: {...}`), each default in its row: partition, account, "
            "qos, constraint and setup are the grid's `slurm:` values unless given; `additional` never is."),
    Section("`camvis.yaml`", "", site.Site,
            "The project file, found by walking up from the working folder as git finds `.git`; relative paths "
            f"are against its folder. Precedence: {site.PRECEDENCE}.",
            keys=tuple(site.DEFAULTS), defaults=site.DEFAULTS),
)


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring (the string literal right under it), on one line."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def section_keys(section: Section) -> list[dataclasses.Field]:
    fields = dataclasses.fields(section.cls)
    if section.keys is not None:
        return [f for f in fields if f.name in section.keys]
    return [f for f in fields if not dataclasses.is_dataclass(config._field_types(section.cls)[f.name])]


def default_text(value: Any) -> str:
    """A default as YAML would spell it in a config file."""
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: f"e{m[1].strip('+')}{m[2]}", f"{value:g}")  # 1e-06 -> 1e-6
    if isinstance(value, str):
        return value or '""'
    return json.dumps(list(value) if isinstance(value, tuple) else value)  # null, true, [2, 4], {}


def field_default(section: Section, f: dataclasses.Field) -> str:
    if section.defaults is not None:
        return default_text(section.defaults[f.name])
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return default_text(value)


def cell(text: str) -> str:
    """`text` safe in a Markdown table cell: pipes escaped; outside code spans, `<` too (HTML)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def table(section: Section) -> list[str]:
    docs, types_ = field_docs(section.cls), config._field_types(section.cls)
    missing = [f.name for f in section_keys(section) if f.name not in docs]
    if missing:
        raise ConfigError(f"{section.cls.__module__}.{section.cls.__name__}: no docstring under the field(s) "
                         f"{', '.join(missing)}: write one (a string literal right under each field)")
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in section_keys(section):
        doc = docs[f.name]
        if section.cls is site.Site:
            doc += f" Environment: `${site.ENV[f.name]}`."
        rows.append(f"| `{section.prefix}{f.name}` | {cell(config._type_name(types_[f.name]))} | "
                    f"`{field_default(section, f)}` | {cell(doc)} |")
    return rows


def render() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the config classes' field docstrings: edit those, not this "
        "page (tests/test_docs.py fails when they differ). -->",
        "",
        "Every key of a job config, of a grid's `slurm:` and `store:` sections (and a site profile's "
        "`slurm:`) and of the project file `camvis.yaml`: its type, its default and what it means. Values "
        "are read as YAML, on the command line too (`train.lr=1e-4`); an unknown key or a value of another "
        "type is one error naming the file and the key. A grid's own layout (`experiment`, `folds`, `base`, "
        "`axes`, ...) is described in [Grids and site settings](grids.md).",
    ]
    for section in SECTIONS:
        lines += ["", f"## {section.title}", "", section.intro, "", *table(section)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = new_parser("python -m camvis.cli.config_reference", __doc__)
    p.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(PAGE.parents[1])} instead of "
                                                        "printing the page")
    args = p.parse_args(argv)
    try:
        text = render()
        if args.write:
            from camvis.io import write_text

            write_text(PAGE, text)
            print(f"wrote {PAGE}")
        else:
            sys.stdout.write(text)
    except (CamvisError, OSError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
