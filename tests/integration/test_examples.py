"""Every example of every `--help`, of the README and of the docs pages runs as written after `make demo`.

Where the examples come from:
- `--help`: each console script of pyproject.toml ([project.scripts]) and each of its subcommands;
  the indented lines under an `examples:` line, up to the first line that is not indented. An
  example starts at the paragraph's smallest indent with a program's name; deeper lines continue
  the comment above. A comment is `# ...` or what follows a gap of 2+ spaces.
- README.md and docs/*.md (EXAMPLE_PAGES): the code blocks (indented or fenced) right after a line
  `<!-- example -->`, every line a command (a fenced `python` block is one script). A block that names a
  program but is not marked fails `test_readme_command_blocks_are_marked`, so a new example cannot go
  untested. docs/first-run.md is left to tests/integration/test_first_run.py, which runs its commands
  literally on the local SLURM.

How each runs: in the folder of a shrunk `make demo` (tests/integration/conftest.py: the demo's
paths, data and store, its 8 jobs trained for 1 epoch of 64 patches), restored as the demo left it
for each example (a README block's lines run in order in one), with the checkout's configs/ where
demo.yaml and job.yaml get the same shrinking overrides (so job.yaml stays the demo's cat_fold1 and
every demo job stays finished). camvis-* commands run in this process through their entry points
(the shell's part done here: glob expansion, `> FILE`); torchrun as a process. Exit status 0 expected.
Rules where a cluster, a GPU or root is needed:
- `camvis-launch` submitting to SLURM (no --local, --debug or --dry-run) runs with `--dry-run`
  added: the job table, the sbatch scripts and the preflight (exit 2 on any problem).
- examples that act on SLURM jobs (`camvis-status --cancel`, `camvis-predict --slurm`,
  `camvis-data build --slurm`, `camvis-doctor`: it checks the cluster) run for real
  on the local cluster in the `slurm`-marked test (CAMVIS_SLURM=1); `--cancel` after a held
  launch of the demo grid. Without the cluster they are skipped, with the reason.
- an example that needs CUDA (`--device cuda`, `train.device=cuda`, `--gpus N`, not a launch) is
  skipped without CUDA.
- `make TARGET`: the Makefile has the target; `bash slurm/cluster.sh CMD`: the script handles CMD.
  Neither runs (they install packages and start daemons as root).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
RUN = ("torchrun", "python")  # run as processes, as written
CHECKED = ("make", "bash")     # checked, not run (see the module docstring)
MARKER = "<!-- example -->"
EXAMPLE_PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "first-run.md")]
SLURM = os.environ.get("CAMVIS_SLURM") == "1"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Example:
    source: str              # "camvis-data build --help", "README.md line 42"
    commands: tuple[str, ...]  # one command line each (comments cut), run in order in one folder
    python: str | None = None  # a README python block instead

    @property
    def id(self) -> str:
        return f"{self.source}: {self.commands[0] if self.commands else 'python'}"


# --------------------------------------------------------------------------- finding the examples


class _Parser(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def entry_point(script: str):
    module, _, function = SCRIPTS[script].partition(":")
    return getattr(importlib.import_module(module), function)


def script_parsers(script: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of a console script and of each subcommand: its main is called with the
    parsing replaced by a capture, so the parser is the one `--help` prints."""
    def capture(self, *args, **kwargs):
        raise _Parser(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            entry_point(script)([])
        except _Parser as found:
            top = found.parser
        else:
            raise AssertionError(f"{script}: main() did not parse its arguments")
    parsers, todo = [], [(script, top)]
    while todo:
        name, parser = todo.pop(0)
        parsers.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return parsers


def cut_comment(line: str) -> str:
    """The command of an example line: up to `#` or to a gap of 2+ spaces."""
    match = re.search(r"\s+#|\s{2,}", line.strip())
    return line.strip()[: match.start()] if match else line.strip()


def program_of(command: str) -> str:
    return command.split()[0]


def known_program(word: str) -> bool:
    return word in SCRIPTS or word in RUN or word in CHECKED


def help_examples(text: str, source: str) -> list[str]:
    """The example commands of a help text (see the module docstring)."""
    lines = text.splitlines()
    if "examples:" not in [line.strip() for line in lines]:
        return []
    start = [line.strip() for line in lines].index("examples:") + 1
    block = []
    for line in lines[start:]:
        if not line.strip() or not line[0].isspace():
            break
        block.append(line)
    indent = min(len(line) - len(line.lstrip()) for line in block)
    commands = []
    for line in block:
        if len(line) - len(line.lstrip()) > indent:
            continue  # the comment of the line above, continued
        word = line.split()[0]
        assert known_program(word), f"{source}: example line names no known program: {line.strip()!r}"
        commands.append(cut_comment(line))
    return commands


def all_help_examples() -> list[Example]:
    examples: dict[str, Example] = {}  # camvis-model shows its examples under summary --help too: once
    for script in SCRIPTS:
        for name, parser in script_parsers(script):
            for command in help_examples(parser.format_help(), f"{name} --help"):
                examples.setdefault(command, Example(f"{name} --help", (command,)))
    return list(examples.values())


def readme_blocks(page: Path = REPO / "README.md") -> list[tuple[int, bool, str, list[str]]]:
    """(line number, marked, fence language or "", lines) of every code block of `page`."""
    lines = page.read_text().splitlines()
    blocks, i, last_text = [], 0, ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            language, body, i = line[3:].strip(), [], i + 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((i - len(body), last_text == MARKER, language, body))
            last_text, i = "", i + 1
            continue
        if line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            body, start = [], i
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            blocks.append((start + 1, last_text == MARKER, "", body))
            last_text = ""
            continue
        if line.strip():
            last_text = line.strip()
        i += 1
    return blocks


def readme_examples() -> list[Example]:
    examples = []
    for page, (number, marked, language, body) in ((p, b) for p in EXAMPLE_PAGES for b in readme_blocks(p)):
        if not marked:
            continue
        source = f"{page.relative_to(REPO)} line {number}"
        if language == "python":
            examples.append(Example(source, (), python="\n".join(body)))
            continue
        commands = [cut_comment(line) for line in body if line.strip() and not line.strip().startswith("#")]
        for command in commands:
            assert known_program(program_of(command)), f"{source}: {command!r} names no known program"
        examples.append(Example(source, tuple(commands)))
    return examples


HELP_EXAMPLES = all_help_examples()
README_EXAMPLES = readme_examples()


def needs_slurm(argv: list[str]) -> bool:
    return (argv[0] == "camvis-status" and "--cancel" in argv) or argv[0] == "camvis-doctor" or \
        (argv[0] in ("camvis-predict", "camvis-data") and "--slurm" in argv)


def needs_cuda(argv: list[str]) -> bool:
    if argv[0] == "camvis-launch":
        return False  # a dry run needs no GPU
    joined = " ".join(argv)
    return bool(re.search(r"--device[ =]cuda|\.device=cuda|--gpus[ =][1-9]", joined))


# --------------------------------------------------------------------------- the demo-like folder


@pytest.fixture(scope="module")
def configs(demo_run, tmp_path_factory) -> Path:
    """The checkout's configs/, demo.yaml and job.yaml shrunk as the demo ran (job.yaml stays the
    demo's cat_fold1, whose config hash the demo's job folder holds)."""
    from camvis.cluster.grid import load_grid
    from camvis.config import load_job_config, parse_override, set_dotted

    assert demo_run.status == 0, demo_run.out[-3000:]
    path = shutil.copytree(REPO / "configs", tmp_path_factory.mktemp("examples") / "configs")
    for name in ("demo.yaml", "job.yaml"):
        raw = yaml.safe_load((REPO / "configs" / name).read_text())
        for override in demo_run.overrides:
            key, value = parse_override(override)
            if not key.startswith("slurm."):
                set_dotted(raw["base"] if "base" in raw else raw, key, value)
            elif "base" in raw:  # a grid: slurm.* is its slurm section; a job config has none
                set_dotted(raw, key, value)
        (path / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_job_config(path / "job.yaml") == load_grid(path / "demo.yaml").jobs[0].config
    return path


@pytest.fixture
def folder(after_demo, configs) -> Path:
    """The cwd: the folder `make demo` ran in, as it left it, with the shrunk configs/."""
    shutil.copytree(configs, after_demo / "configs")
    return after_demo


# --------------------------------------------------------------------------- running one


@dataclass
class Ran:
    status: int
    output: str


def shell_words(command: str) -> tuple[list[str], str | None]:
    """argv as the shell would give it (globs expanded, unmatched ones kept), and a `> FILE`."""
    words = shlex.split(command)
    unsupported = [w for w in words if w in ("|", "||", "&&", ";", "<", "2>", ">>", "&")]
    assert not unsupported, f"{command!r}: shell syntax {unsupported} is not supported by this test"
    redirect = None
    if ">" in words:
        i = words.index(">")
        redirect, words = words[i + 1], words[:i] + words[i + 2:]
    argv = []
    for word in words:
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
        argv += matches or [word]
    return argv, redirect


def run_command(command: str) -> Ran:
    """One example line in the current folder (see the module docstring for the rules)."""
    argv, redirect = shell_words(command)
    program = argv[0]
    if program == "make":
        targets = re.findall(r"^([A-Za-z0-9_.-]+):", (REPO / "Makefile").read_text(), re.M)
        missing = [t for t in argv[1:] if not t.startswith("-") and t not in targets]
        return Ran(2 if missing else 0, f"Makefile targets {targets}; missing {missing}")
    if program == "bash":  # bash SCRIPT [CMD]: the script has a `CMD)` case
        script = REPO / argv[1]
        command_case = rf"^\s*{re.escape(argv[2])}\)" if len(argv) > 2 else ""
        ok = script.is_file() and bool(re.search(command_case, script.read_text(), re.M))
        return Ran(0 if ok else 2, f"{script}: {'handles' if ok else 'does not handle'} {argv[2:3]}")
    if program == "camvis-launch" and not {"--local", "--debug", "--dry-run"} & set(argv):
        argv.append("--dry-run")  # SLURM: the job table, the scripts and the preflight
    if program in SCRIPTS:
        return _in_process(argv, redirect)
    assert redirect is None, f"{command!r}: a redirect is supported for camvis commands only"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    executable = Path(sys.executable).parent / program
    done = subprocess.run([str(executable if executable.exists() else program), *argv[1:]], env=env,
                          capture_output=True, text=True, timeout=600)
    return Ran(done.returncode, done.stdout + done.stderr)


def _in_process(argv: list[str], redirect: str | None) -> Ran:
    out, err = _Buffer(), _Buffer()
    target = open(redirect, "w") if redirect else out
    try:
        with contextlib.redirect_stdout(target), contextlib.redirect_stderr(err):
            try:
                status = entry_point(argv[0])(argv[1:])
            except SystemExit as e:  # argparse
                status = e.code if isinstance(e.code, int) else 2
    finally:
        if redirect:
            target.close()
    text = out.getvalue() + err.getvalue()
    if redirect:
        text += Path(redirect).read_text()
    return Ran(int(status or 0), text)


class _Buffer(io.StringIO):
    def isatty(self) -> bool:
        return False


def run_example(example: Example, folder: Path) -> None:
    """Runs every command of `example` in `folder` (the cwd), failing on the first that fails."""
    if example.python is not None:
        exec(compile(example.python, example.source, "exec"), {"__name__": "__example__"})
        return
    for command in example.commands:
        argv, _ = shell_words(command)
        if needs_cuda(argv):
            import torch

            if not torch.cuda.is_available():
                pytest.skip(f"{command!r} needs CUDA")
        ran = run_command(command)
        assert ran.status == 0, f"{example.source}: `{command}` exited {ran.status}:\n{ran.output[-4000:]}"


def _params(examples: list[Example], slurm: bool) -> list:
    chosen = [e for e in examples
              if any(needs_slurm(shell_words(c)[0]) for c in e.commands) == slurm]
    return [pytest.param(e, id=e.id) for e in chosen]


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("example", _params(HELP_EXAMPLES + README_EXAMPLES, slurm=False))
def test_example_runs(example: Example, folder):
    run_example(example, folder)


@pytest.mark.slurm
@pytest.mark.parametrize("example", _params(HELP_EXAMPLES + README_EXAMPLES, slurm=True))
def test_slurm_example_runs(example: Example, folder):
    if not SLURM:
        pytest.skip("acts on SLURM jobs: runs on the local cluster (CAMVIS_SLURM=1, make test)")
    from camvis.bookkeeping import experiment_files

    if any("--cancel" in c for c in example.commands):  # something to cancel: the demo grid, held
        held = _in_process(["camvis-launch", "configs/demo.yaml", "--restart", "slurm.additional.hold=true"], None)
        assert held.status == 0, held.output
    try:
        run_example(example, folder)
    finally:  # nothing left in the shared queue
        manifest = experiment_files.experiment_manifest("jobs", "demo")
        ids = experiment_files.array_ids(manifest) + experiment_files.aggregate_ids(manifest)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, check=False)


def test_every_command_has_examples():
    """Every console script and subcommand that runs something shows at least one example."""
    missing = []
    for script in SCRIPTS:
        for name, parser in script_parsers(script):
            leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
            if leaf and not help_examples(parser.format_help(), name):
                missing.append(name)
    assert not missing, f"--help without examples: {missing}"


def test_readme_command_blocks_are_marked():
    """A code block of the README or a docs page that names a program is marked as an example (so this
    module runs it)."""
    unmarked = []
    for page, (number, marked, language, body) in ((p, b) for p in EXAMPLE_PAGES for b in readme_blocks(p)):
        words = [line.split()[0] for line in body if line.strip()]
        if not marked and language not in ("yaml", "python") and any(known_program(w) for w in words):
            unmarked.append(f"{page.relative_to(REPO)} line {number}")
        if not marked and language == "python" and any("import camvis" in l or "from camvis" in l for l in body):
            unmarked.append(f"{page.relative_to(REPO)} line {number}")
    assert not unmarked, f"code blocks naming programs without {MARKER} before them: {unmarked}"
    assert len(README_EXAMPLES) >= 4


def test_job_yaml_is_the_demo_grids_first_job():
    """configs/job.yaml as shipped is the demo's cat_fold1 (so camvis-eval configs/job.yaml finds
    make demo's best.pt and re-evaluates it under the same config hash)."""
    from camvis.cluster.grid import load_grid
    from camvis.config import config_hash, load_job_config

    job = load_job_config(REPO / "configs/job.yaml")
    first = load_grid(REPO / "configs/demo.yaml").jobs[0]
    assert (job.experiment, job.name) == ("demo", first.name) and job == first.config
    assert config_hash(job) == config_hash(first.config)


def test_a_broken_example_fails(folder):
    """The runner is not vacuous: a wrong path, a wrong flag, a missing make target each fail."""
    assert run_command("camvis-data info data/processed/nope.zarr").status == 2
    assert run_command("camvis-aggregate demo --no-such-flag").status == 2
    assert run_command("camvis-launch configs/demo.yaml data.store=data/processed/nope.zarr").status == 2
    assert run_command("make no-such-target").status != 0
    assert run_command("bash slurm/cluster.sh no-such-command").status != 0
    with pytest.raises(AssertionError, match="exited 2"):
        run_example(Example("test", ("camvis-status no_such_experiment --logs x",)), Path.cwd())
    with pytest.raises(AssertionError, match="no known program"):
        help_examples("examples:\n  camvis-lanch configs/demo.yaml\n", "test")
