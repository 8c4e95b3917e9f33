"""The paper's pipeline end to end at paper image size on the local SLURM: synthesize, build, launch, aggregate.

    bash slurm/cluster.sh start --nodes 2
    python benchmarks/bench_paper_scale.py                                  # 9 views x 2 images of 4140 x 6198, 72 jobs
    python benchmarks/bench_paper_scale.py --folds 1 2                      # 8 architectures x 2 folds (16 jobs)
    python benchmarks/bench_paper_scale.py --size 1035x1550 --images-per-view 1 --archs type_1 type_2 --folds 1 2
    python benchmarks/bench_paper_scale.py --local ...                      # camvis-launch --local, no SLURM

Stages, each a public command run as a fresh process (so the script follows the CLIs, not their insides):
`camvis-data synth` (9 views x a few images; skipped with --raw), `camvis-data build --workers N`, a
pilot job (`camvis-launch configs/all_architectures.yaml --only group=G --only fold=F` with a generous
slurm.mem_gb) whose measured peak memory sizes slurm.mem_gb of the rest, the launch of the grid (or the
--archs/--folds subset; the pilot, finished, is skipped), the wait until every task and the dependent
aggregate job have ended (sacct), and `camvis-aggregate`. Training budgets are tiny (1 epoch of
--epoch-patches patches, batch --batch-size, eval.bootstrap --bootstrap, --patches-per-image patches per
image in the store, so the held-out view's evaluation is small) and the jobs run on the CPU
(slurm.gpus_per_node=0): what is measured is everything around the network: store, start-up, memory,
evaluation outputs, scheduling.

Per job: its phases from scores.json (`timing`: load_s, train_s, evaluate_s; `peak_host_mem_gb`), sacct's
Submit/Start/End/MaxRSS (MaxRSS is sampled every JobAcctGatherFrequency, 30 s here: short jobs read low;
ru_maxrss in scores.json is exact for the job's process), and the start-up: from SLURM's Start (1 s
resolution) to the start of training (model built, first step next), i.e. the time scores.json was last
written (right after the evaluation) - evaluate_s - train_s, of which load_s is opening the store and
reading the levels onto the device.

--report-from JSON re-reads a kept --workdir and an earlier run's JSON (its stages) and writes the per-job
figures and the extrapolation again, without running anything.

Extrapolation to the paper (121 images of 4140 x 6198 in 9 views, 500 patches per image, 8 x 9 jobs):
build time x 121 / images built (same workers); per-job memory = measured peak - the measured store's
padded pyramid + the paper's (the pyramid is linear in images: 3 uint8 per pixel per image and one float32
depth map per view at every level, camvis.job.memory's formula); and the full training run on one GPU per
job: model FLOPs per sample (camvis.model.training_flops, forward + backward) x training patches per epoch x
max_epochs + the held-out view's forward passes (validation every epoch with selection heldout, and the
final evaluation), divided by --peak-tflops x --mfu (both assumptions, stated in the output: no GPU
figure exists yet).
"""

from __future__ import annotations

NEEDS = """needs: the local SLURM cluster with 2 nodes (bash slurm/cluster.sh start --nodes 2), or --local;
it synthesizes its raw data (or --raw DIR).
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "all_architectures.yaml"
PAPER = {"images": 121, "views": 9, "size": (4140, 6198), "patches_per_image": 500, "patch_size": 128}
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
GIB = 1 << 30
console = Console(width=None if sys.stdout.isatty() else 160)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=9)
    p.add_argument("--images-per-view", type=int, default=2)
    p.add_argument("--size", default="paper", help="HxW or 'paper' (4140x6198)")
    p.add_argument("--raw", type=Path, default=None, help="an existing raw data dir: no synthesis")
    p.add_argument("--patches-per-image", type=int, default=8, help="store patches per image (paper: 500)")
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--build-workers", type=int, default=2)
    p.add_argument("--archs", nargs="+", default=None, help="groups of the grid (default: all 8)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="folds (default: all)")
    p.add_argument("--epoch-patches", type=int, default=4, help="training patches of the one epoch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--bootstrap", type=int, default=50)
    p.add_argument("--cpus-per-task", type=int, default=2)
    p.add_argument("--pilot-mem-gb", type=int, default=8, help="slurm.mem_gb of the pilot job")
    p.add_argument("--mem-gb", type=int, default=None, help="slurm.mem_gb of the grid (default: from the pilot)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="another camvis-launch override (repeatable)")
    p.add_argument("--local", action="store_true", help="camvis-launch --local (no SLURM, no pilot)")
    p.add_argument("--timeout-min", type=float, default=60.0, help="give up waiting (and scancel) after this")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="GPU dense bf16 peak assumed for the extrapolation (H100/H200 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOP utilisation assumed (default 0.4)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the workdir (data, store, outputs)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "paper_scale.json")
    p.add_argument("--report-from", type=Path, default=None, metavar="JSON",
                   help="re-read the kept --workdir of the run that wrote JSON: figures again, nothing run")
    return p.parse_args(argv)


def size_of(text: str) -> tuple[int, int]:
    if text == "paper":
        return PAPER["size"]
    h, w = text.lower().split("x")
    return int(h), int(w)


# --------------------------------------------------------------------------- running commands


@dataclass
class Run:
    cmd: list[str]
    seconds: float
    rc: int
    peak_rss_gib: float  # the largest RSS of the process and its waited-for children (wait4)
    out: str


def cli(name: str) -> str:
    """A camvis console script beside this interpreter (the venv's), else on PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def run(cmd: list[str], log: Path, check: bool = True) -> Run:
    """Run `cmd`, output to `log`; its wall time and peak RSS from wait4 (ru_maxrss, KiB)."""
    console.print(f"[dim]$ {' '.join(cmd)}[/dim]")
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=job_env())
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    text = log.read_text()
    out = text[text.rfind(f"$ {' '.join(cmd)}\n"):]
    if check and rc != 0:
        sys.exit(f"failed ({rc}): {' '.join(cmd)}\n{out[-3000:]}")
    return Run(cmd, seconds, rc, usage.ru_maxrss / 2**20, out)


def job_env() -> dict[str, str]:
    """This checkout first on PYTHONPATH: SLURM jobs inherit it and import this camvis."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- SLURM


def sacct_rows(ids: list[str], allocations: bool) -> list[dict[str, str]]:
    fields = ["JobID", "State", "Submit", "Start", "End", "ElapsedRaw", "MaxRSS", "NodeList"]
    cmd = ["sacct", "-n", "-P", "-j", ",".join(ids), "-o", ",".join(fields)] + (["-X"] if allocations else [])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def queued(ids: list[str]) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def wait_for(ids: list[str], timeout_s: float, what: str) -> float:
    """Seconds until none of the SLURM jobs `ids` (arrays included) is pending or running."""
    if not ids:  # the launch submitted nothing (every job finished already)
        return 0.0
    start = time.perf_counter()
    time.sleep(2)  # sacct learns of a job from slurmctld a moment after sbatch
    last = ""
    while True:
        rows = sacct_rows(ids, allocations=True)
        states = sorted({r["State"].split()[0] for r in rows})
        active = [r for r in rows if r["State"].split()[0] in ACTIVE]
        if rows and not active and not queued(ids):
            return time.perf_counter() - start
        elapsed = time.perf_counter() - start
        line = f"{what}: {len(active)} rows active of {len(rows)}, states {states}, {elapsed:.0f} s, load {loadavg()}"
        if line.split(",")[0] != last:
            console.print(f"[dim]{time.strftime('%H:%M:%S')} {line}[/dim]")
            last = line.split(",")[0]
        if elapsed > timeout_s:
            raise TimeoutError(f"{what}: still active after {timeout_s:.0f} s")
        time.sleep(5)


def scancel(ids: list[str]) -> None:
    if ids and shutil.which("scancel"):
        subprocess.run(["scancel", *ids], capture_output=True)


def rss_gib(text: str) -> float | None:
    """sacct's MaxRSS ('123456K', '1.5G', '') in GiB."""
    if not text:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    scale = units.get(text[-1].upper())
    return float(text[:-1] if scale else text) * (scale or 1) / GIB


def slurm_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text).astimezone()  # sacct prints local time
    except ValueError:
        return None  # Unknown / None


# --------------------------------------------------------------------------- per-job figures


@dataclass
class JobFacts:
    name: str
    group: str
    fold: int
    job_id: str | None
    state: str
    node: str = ""
    pilot: bool = False
    queue_s: float | None = None     # SLURM Submit -> Start
    startup_s: float | None = None   # SLURM Start (local: submitted) -> first training step
    load_s: float | None = None
    train_s: float | None = None
    evaluate_s: float | None = None
    elapsed_s: float | None = None   # SLURM Start -> End
    peak_host_mem_gb: float | None = None  # ru_maxrss of the job (scores.json), GB
    sacct_maxrss_gib: float | None = None
    n_train: int | None = None
    n_val: int | None = None
    error: str | None = None  # the first line of error.txt of a failed job


def job_facts(manifest: dict[str, Any], outputs: Path, experiment: str, pilot: str | None) -> list[JobFacts]:
    entries = manifest.get("jobs", {})
    ids = sorted({str(e["array_id"]) for e in entries.values() if e.get("array_id")})
    steps: dict[str, list[dict[str, str]]] = {}
    for row in sacct_rows(ids, allocations=False) if ids and shutil.which("sacct") else []:
        steps.setdefault(row["JobID"].split(".")[0], []).append(row)
    facts = []
    for name, entry in sorted(entries.items()):
        rows = steps.get(str(entry.get("job_id")), [])
        top = next((r for r in rows if "." not in r["JobID"]), None)
        f = JobFacts(name, entry["group"], entry["fold"], entry.get("job_id"),
                     top["State"].split()[0] if top else "?", node=top["NodeList"] if top else "", pilot=name == pilot)
        rss = [g for g in (rss_gib(r["MaxRSS"]) for r in rows) if g is not None]
        f.sacct_maxrss_gib = max(rss) if rss else None
        start = slurm_time(top["Start"]) if top else dt.datetime.fromisoformat(entry["submitted"])
        if top:
            submit, end = slurm_time(top["Submit"]), slurm_time(top["End"])
            f.queue_s = (start - submit).total_seconds() if start and submit else None
            f.elapsed_s = (end - start).total_seconds() if start and end else None
        error = outputs / experiment / name / "error.txt"
        if error.exists():
            f.error = (error.read_text().strip().splitlines() or [""])[0][:300]
        scores_path = outputs / experiment / name / "scores.json"
        if scores_path.exists():
            scores = json.loads(scores_path.read_text())
            timing = scores.get("timing", {})
            f.load_s, f.train_s, f.evaluate_s = (timing.get(k) for k in ("load_s", "train_s", "evaluate_s"))
            f.peak_host_mem_gb = scores.get("peak_host_mem_gb")
            f.n_train, f.n_val = scores.get("n_train"), scores.get("n_val")
            if f.state == "?":
                f.state = "COMPLETED"
            # the job rewrites scores.json with its timing right after the last phase ends (its `finished`
            # is stamped earlier, before the evaluation's last files): the file's time is the job's end
            ended = dt.datetime.fromtimestamp(scores_path.stat().st_mtime).astimezone()
            if start and f.train_s is not None and f.evaluate_s is not None:
                first_step = ended - dt.timedelta(seconds=f.train_s + f.evaluate_s)
                f.startup_s = (first_step - start).total_seconds()
        facts.append(f)
    return facts


# --------------------------------------------------------------------------- extrapolation


def pyramid_bytes(size: tuple[int, int], factors: list[int], patch: int, images: int, views: int) -> int:
    """camvis.job.memory's padded pyramid: 3 uint8 per image pixel + 1 float32 per view pixel, every level."""
    return sum((3 * images + 4 * views) * (size[0] // f + patch) * (size[1] // f + patch) for f in factors)


def model_flops(grid: dict[str, Any], patch: int) -> dict[str, dict[str, float]]:
    """Per group of the grid: forward and forward + backward GFLOP of one sample (camvis.model)."""
    from camvis.model import MultiMagnificationNet, count_parameters, training_flops

    base = grid["base"]
    levels, hidden = len(base["data"]["factors"]), base["model"]["size_hidden"]
    result = {}
    for group, keys in grid["axes"]["group"].items():
        flags = {k.split(".")[1]: v for k, v in keys.items()}
        model = MultiMagnificationNet(levels, size_hidden=hidden, patch_size=patch, **flags)
        forward, backward = training_flops(model)
        result[group] = {"parameters": count_parameters(model), "gflop_forward": forward / 1e9,
                         "gflop_train": (forward + backward) / 1e9}
    return result


def gpu_extrapolation(grid: dict[str, Any], flops: dict[str, dict[str, float]], peak_tflops: float,
                      mfu: float) -> dict[str, Any]:
    """GPU-hours of the paper's grid: every fold trains on the other views' patches, max_epochs epochs."""
    train = grid["base"]["train"]
    epochs, folds = train["max_epochs"], grid.get("folds", PAPER["views"])
    patches = PAPER["images"] * PAPER["patches_per_image"]
    heldout = patches / PAPER["views"]          # a view's share, on average
    training = patches - heldout                 # upper bound: rebalancing keeps <= all of them
    validation = heldout if train.get("selection") == "heldout" else 0.2 * training
    rate = peak_tflops * 1e12 * mfu
    per_group = {}
    for group, f in flops.items():
        job_flop = (epochs * (training * f["gflop_train"] + validation * f["gflop_forward"])
                    + heldout * f["gflop_forward"]) * 1e9
        per_group[group] = {"job_gpu_h": job_flop / rate / 3600, "job_pflop": job_flop / 1e15}
    total = sum(g["job_gpu_h"] for g in per_group.values()) * folds
    return {"assumptions": {"peak_tflops": peak_tflops, "mfu": mfu, "epochs": epochs, "folds": folds,
                            "training_patches_per_epoch": round(training), "validation_patches_per_epoch": round(validation),
                            "heldout_patches": round(heldout), "batch_size": train["batch_size"],
                            "note": "every epoch at max_epochs (an upper bound: the plateau schedule stops at min_lr, "
                                    "after >= 3 x plateau_patience epochs); all training patches per epoch (rebalancing "
                                    "keeps fewer); GPU peak and MFU assumed, not measured"},
            "per_group": per_group, "jobs": folds * len(per_group), "grid_gpu_h": total,
            "longest_job_h": max(g["job_gpu_h"] for g in per_group.values())}


def memory_extrapolation(facts: list[JobFacts], size: tuple[int, int], factors: list[int], patch: int,
                         images: int, views: int) -> dict[str, Any]:
    done = [f.peak_host_mem_gb for f in facts if f.peak_host_mem_gb is not None]
    measured = pyramid_bytes(size, factors, patch, images, views) / GIB
    paper = pyramid_bytes(PAPER["size"], factors, PAPER["patch_size"], PAPER["images"], PAPER["views"]) / GIB
    per_image = pyramid_bytes(PAPER["size"], factors, PAPER["patch_size"], 1, 0) / GIB
    peak = max(done) * 1e9 / GIB if done else None
    return {"measured_peak_gib": peak, "measured_pyramid_gib": measured, "paper_pyramid_gib": paper,
            "pyramid_per_image_gib": per_image,
            "paper_cpu_job_peak_gib": peak - measured + paper if peak is not None else None,
            "rule": "peak - pyramid(these images) + pyramid(121 images, 9 views); on a GPU the pyramid "
                    "lives in device memory and the host keeps the rest"}


# --------------------------------------------------------------------------- the stages


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.work / "commands.log"

    def stage(self, name: str, r: Run, **extra: Any) -> None:
        self.stages[name] = {"seconds": round(r.seconds, 2), "peak_rss_gib": round(r.peak_rss_gib, 3),
                             "load_avg": loadavg(), **extra}
        console.print(f"[bold]{name}[/bold]: {r.seconds:.1f} s, peak RSS {r.peak_rss_gib:.2f} GiB, load {loadavg()}")

    def launch_cmd(self, extra: list[str]) -> list[str]:
        a = self.args
        overrides = [f"experiment={self.experiment}", f"folds={a.views}", f"data.store={self.store}", "train.max_epochs=1",
                     f"train.epoch_patches={a.epoch_patches}", f"train.batch_size={a.batch_size}",
                     f"eval.batch_size={a.eval_batch_size}", f"eval.bootstrap={a.bootstrap}", "train.device=cpu",
                     "slurm.gpus_per_node=0", f"slurm.cpus_per_task={a.cpus_per_task}", "slurm.time=60", *a.extra]
        mode = ["--local"] if a.local else []
        return [cli("camvis-launch"), str(GRID), *overrides, *extra, *mode,
                "--outputs", str(self.outputs), "--jobs-dir", str(self.jobs)]

    experiment = "paper_scale"

    @property
    def outputs(self) -> Path:
        return self.work / "outputs"

    @property
    def jobs(self) -> Path:
        return self.work / "jobs"

    @property
    def store(self) -> Path:
        return self.work / "store.zarr"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.jobs / self.experiment / "manifest.json").read_text())

    def last_launch_ids(self) -> tuple[list[str], list[str]]:
        """(the arrays, the aggregate job) the last launch submitted, from its manifest record."""
        launch = self.manifest()["launches"][-1]
        arrays = [str(i) for i in (launch.get("array_ids") or [launch.get("array_id")]) if i]
        aggregate = [str(launch["aggregate_id"])] if launch.get("aggregate_id") else []
        self.submitted += arrays + aggregate
        return arrays, aggregate


def synth(b: Bench, size: tuple[int, int]) -> Path:
    a = b.args
    if a.raw is not None:
        b.stages["synth"] = {"seconds": None, "skipped": f"--raw {a.raw}"}
        return a.raw
    raw = b.work / "raw"
    r = run([cli("camvis-data"), "synth", str(raw), "--views", str(a.views), "--images-per-view",
             str(a.images_per_view), "--size", f"{size[0]}x{size[1]}"], b.log)
    b.stage("synth", r, images=a.views * a.images_per_view, disk_gib=du_gib(raw))
    return raw


def build(b: Bench, raw: Path, images: int) -> None:
    a = b.args
    r = run([cli("camvis-data"), "build", str(raw), str(b.store), "--workers", str(a.build_workers),
             "--patches-per-image", str(a.patches_per_image), "--patch-size", str(a.patch_size)], b.log)
    b.stage("build", r, images=images, workers=a.build_workers, s_per_image=round(r.seconds / images, 2),
            store_gib=du_gib(b.store), raw_gib=du_gib(raw))


def pilot(b: Bench, group: str, fold: int) -> str:
    """One job alone, with a generous allocation: its measured peak sizes the grid's slurm.mem_gb."""
    r = run(b.launch_cmd([f"slurm.mem_gb={b.args.pilot_mem_gb}", "--only", f"group={group}",
                          "--only", f"fold={fold}"]), b.log)
    arrays, _ = b.last_launch_ids()
    waited = wait_for(arrays, b.args.timeout_min * 60, "pilot")
    name = next(n for n, e in b.manifest()["jobs"].items() if e["group"] == group and e["fold"] == fold)
    r.seconds += waited  # launch + the wait for its end
    b.stage("pilot", r, job=name, launch_s=round(r.seconds - waited, 2), mem_gb=b.args.pilot_mem_gb)
    return name


def grid_mem_gb(b: Bench, facts: list[JobFacts], size: tuple[int, int], images: int) -> int:
    """The pilot's peak (ru_maxrss or sacct, the larger) + 30 %, and at least the need a job checks against
    its allocation at start (camvis.job.memory: the process + the padded pyramid), or it would refuse to run."""
    f = next(f for f in facts if f.pilot)
    peaks = [x for x in (f.peak_host_mem_gb and f.peak_host_mem_gb * 1e9 / GIB, f.sacct_maxrss_gib) if x]
    if not peaks:
        sys.exit(f"the pilot job {f.name} left no peak memory (state {f.state}: {f.error}): see {b.log}")
    try:
        from camvis.job.memory import BASE_BYTES
    except ImportError:
        BASE_BYTES = GIB
    factors = yaml.safe_load(GRID.read_text())["base"]["data"]["factors"]
    need = (BASE_BYTES + pyramid_bytes(size, factors, b.args.patch_size, images, b.args.views)) / GIB
    return math.ceil(max(max(peaks) * 1.3, need * 1.05))


def launch_grid(b: Bench, mem_gb: int | None) -> tuple[list[str], list[str]]:
    a = b.args
    only = []
    if a.archs:
        only += ["--only", "group=" + ",".join(a.archs)]
    if a.folds:
        only += ["--only", "fold=" + ",".join(map(str, a.folds))]
    memory = [f"slurm.mem_gb={mem_gb}"] if mem_gb else []
    r = run(b.launch_cmd(memory + only), b.log)
    if a.local:
        b.stage("jobs", r, mode="local: jobs and aggregate in the launch")
        return [], []
    b.stage("launch", r, mem_gb=mem_gb)
    return b.last_launch_ids()


def wait_jobs(b: Bench, array: list[str], aggregate: list[str]) -> None:
    start = time.perf_counter()
    waited = wait_for(array, b.args.timeout_min * 60, "array")
    b.stages["jobs"] = {"seconds": round(waited, 1), "load_avg": loadavg()}
    if not aggregate:
        return
    agg = wait_for(aggregate, b.args.timeout_min * 60, "aggregate job")
    row = next(iter(sacct_rows(aggregate, allocations=True)), {})
    b.stages["aggregate_job"] = {"seconds": round(agg, 1), "slurm_elapsed_s": float(row.get("ElapsedRaw") or "nan"),
                                 "state": row.get("State"), "load_avg": loadavg(),
                                 "total_since_launch_s": round(time.perf_counter() - start, 1)}


def aggregate(b: Bench) -> None:
    r = run([cli("camvis-aggregate"), b.experiment, "--outputs", str(b.outputs), "--jobs-dir", str(b.jobs)], b.log)
    summary = next(iter(sorted((b.outputs / b.experiment).glob("**/summary.md"))), None)
    b.stage("aggregate", r, summary=str(summary) if summary else None)


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def du_gib(path: Path) -> float:
    total = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return round(total / GIB, 3)


# --------------------------------------------------------------------------- report


def stage_table(stages: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="paper scale: stages")
    for c in ("stage", "seconds", "peak RSS GiB", "load avg (1, 5, 15 min)", "notes"):
        t.add_column(c, justify="right" if c in ("seconds", "peak RSS GiB") else "left")
    skip = {"seconds", "peak_rss_gib", "load_avg"}
    for name, s in stages.items():
        notes = ", ".join(f"{k}={v}" for k, v in s.items() if k not in skip)
        t.add_row(name, fmt(s.get("seconds"), 1), fmt(s.get("peak_rss_gib"), 2),
                  " ".join(map(str, s.get("load_avg", []))), notes)
    return t


def job_table(facts: list[JobFacts]) -> Table:
    t = Table(title="paper scale: jobs (s; GiB)")
    cols = ("job", "state", "node", "queue", "start-up", "load", "train", "evaluate", "elapsed", "peak host GB",
            "sacct MaxRSS")
    for c in cols:
        t.add_column(c, justify="left" if c in ("job", "state", "node") else "right")
    for f in facts:
        t.add_row(f.name + (" (pilot)" if f.pilot else ""), f.state, f.node, fmt(f.queue_s, 0), fmt(f.startup_s, 0),
                  fmt(f.load_s, 1), fmt(f.train_s, 1), fmt(f.evaluate_s, 1), fmt(f.elapsed_s, 0),
                  fmt(f.peak_host_mem_gb, 2), fmt(f.sacct_maxrss_gib, 2))
    return t


def summary_of(facts: list[JobFacts]) -> dict[str, Any]:
    def stats(values: list[float | None]) -> dict[str, float] | None:
        v = sorted(x for x in values if x is not None)
        return {"min": v[0], "median": v[len(v) // 2], "max": v[-1], "n": len(v)} if v else None

    return {k: stats([getattr(f, k) for f in facts]) for k in
            ("queue_s", "startup_s", "load_s", "train_s", "evaluate_s", "elapsed_s", "peak_host_mem_gb",
             "sacct_maxrss_gib")} | {"completed": sum(f.state == "COMPLETED" for f in facts), "jobs": len(facts)}


def extrapolation_table(result: dict[str, Any]) -> Table:
    x = result["extrapolation"]
    t = Table(title="paper scale: extrapolation to 121 images of 4140 x 6198, 72 jobs")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_column("how")
    for what, value, how in x["rows"]:
        t.add_row(what, value, how)
    return t


def extrapolate(b: Bench, result: dict[str, Any], size: tuple[int, int], images: int,
                facts: list[JobFacts]) -> dict[str, Any]:
    a = b.args
    grid = yaml.safe_load(GRID.read_text())
    factors = grid["base"]["data"]["factors"]
    flops = model_flops(grid, PAPER["patch_size"])
    gpu = gpu_extrapolation(grid, flops, a.peak_tflops, a.mfu)
    memory = memory_extrapolation(facts, size, factors, a.patch_size, images, a.views)
    scale = PAPER["images"] / images * (PAPER["size"][0] * PAPER["size"][1]) / (size[0] * size[1])
    build_s = b.stages.get("build", {}).get("seconds")
    summary = result["summary"]
    done = [f for f in facts if f.elapsed_s is not None and not f.pilot]  # the grid's array, the pilot before it
    rows = []
    if build_s:
        rows.append(("store build, 121 images", f"{build_s * scale / 60:.1f} min",
                     f"{build_s:.0f} s for {images} images x {scale:.1f} (pixels), {a.build_workers} workers, this load"))
        rows.append(("store size, 121 images", f"{b.stages['build']['store_gib'] * scale:.2f} GiB",
                     f"x {scale:.1f}; levels only grow with pixels (500 patches per image add ~0.1 MiB each)"))
    if memory["paper_cpu_job_peak_gib"] is not None:
        rows.append((f"host memory per CPU job (batch {a.batch_size}, eval {a.eval_batch_size})",
                     f"{memory['paper_cpu_job_peak_gib']:.2f} GiB",
                     f"measured {memory['measured_peak_gib']:.2f} - pyramid {memory['measured_pyramid_gib']:.2f} "
                     f"+ {memory['paper_pyramid_gib']:.2f} (121 images)"))
        rows.append(("pyramid on the GPU per job", f"{memory['paper_pyramid_gib']:.2f} GiB",
                     f"{memory['pyramid_per_image_gib'] * 1024:.0f} MiB per image + 9 depth maps"))
    ratio = memory["paper_pyramid_gib"] / memory["measured_pyramid_gib"]
    if summary.get("startup_s"):
        s = summary["startup_s"]
        rows.append(("job start-up, measured", f"{s['median']:.0f} s (max {s['max']:.0f})",
                     f"{'SLURM start' if not a.local else 'submission'} -> first training step, median of {s['n']}"))
    if summary.get("load_s"):
        s = summary["load_s"]
        rows.append(("store load at 121 images", f"{s['median'] * ratio:.0f} s",
                     f"median load_s {s['median']:.1f} s x {ratio:.1f} (pyramid bytes; the rest of start-up stays)"))
    if done and b.stages.get("jobs", {}).get("seconds"):
        makespan = b.stages["jobs"]["seconds"]
        rows.append(("this tiny grid, all 72 jobs here", f"{makespan * 72 / len(done) / 60:.0f} min",
                     f"{makespan:.0f} s for {len(done)} jobs, scaled by 72 / {len(done)}"))
    for group, g in gpu["per_group"].items():
        rows.append((f"{group}: one job, one GPU", f"{g['job_gpu_h']:.2f} h",
                     f"{flops[group]['gflop_train']:.1f} GFLOP/sample train, {g['job_pflop']:.0f} PFLOP"))
    rows.append(("paper grid, 72 jobs", f"{gpu['grid_gpu_h']:.0f} GPU-h",
                 f"{a.peak_tflops:g} TFLOP/s x MFU {a.mfu:g} (assumed), {gpu['assumptions']['epochs']} epochs of "
                 f"{gpu['assumptions']['training_patches_per_epoch']:,} patches; longest job {gpu['longest_job_h']:.1f} h"))
    rows.append(("paper grid, 72 jobs, MFU 0.1", f"{gpu['grid_gpu_h'] * a.mfu / 0.1:.0f} GPU-h",
                 "the same at a quarter of the utilisation (eager mode is memory-bound: BatchNorm, pooling)"))
    return {"rows": rows, "gpu": gpu, "memory": memory, "flops": flops, "pixel_scale": scale}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report_from is not None:
        return report_again(a)
    size = size_of(a.size)
    if a.workdir is None:
        work = Path(tempfile.mkdtemp(prefix="paper_scale_"))
    else:
        work = a.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    if not a.local and shutil.which("sbatch") is None:
        sys.exit("sbatch is not on PATH: start the local cluster (bash slurm/cluster.sh start --nodes 2) or pass --local")
    b = Bench(a, work)
    images = a.views * a.images_per_view
    console.print(f"workdir {work}; {a.views} views x {a.images_per_view} images of {size[0]} x {size[1]}; "
                  f"load {loadavg()}; free disk {shutil.disk_usage(work).free / GIB:.0f} GiB")
    result: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                              "host": platform.node(), "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "data": {"views": a.views, "images_per_view": a.images_per_view, "size": list(size),
                                       "patches_per_image": a.patches_per_image, "patch_size": a.patch_size},
                              "budget": {"epochs": 1, "epoch_patches": a.epoch_patches, "batch_size": a.batch_size,
                                         "eval_batch_size": a.eval_batch_size, "bootstrap": a.bootstrap,
                                         "cpus_per_task": a.cpus_per_task, "mode": "local" if a.local else "slurm"}}
    try:
        pilot_name = run_stages(b, size, images)
        result.update(stages=b.stages, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        facts = figures(b, result, size, images, pilot_name)
    finally:
        scancel(b.submitted)  # nothing of ours stays queued, whatever happened
        if a.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report(a, b, result, facts)


def run_stages(b: Bench, size: tuple[int, int], images: int) -> str | None:
    """Every stage in turn; the pilot job's name (None without one)."""
    a = b.args
    raw = synth(b, size)
    build(b, raw, images)
    groups = a.archs or list(yaml.safe_load(GRID.read_text())["axes"]["group"])
    pilot_name = None
    mem_gb = a.mem_gb
    if not a.local and mem_gb is None:
        pilot_name = pilot(b, groups[0], (a.folds or [1])[0])
        mem_gb = grid_mem_gb(b, job_facts(b.manifest(), b.outputs, b.experiment, pilot_name), size, images)
        console.print(f"pilot {pilot_name}: slurm.mem_gb={mem_gb} for the grid")
    arrays, aggregate_job = launch_grid(b, mem_gb)
    if arrays:
        wait_jobs(b, arrays, aggregate_job)
    aggregate(b)
    return pilot_name


def figures(b: Bench, result: dict[str, Any], size: tuple[int, int], images: int,
            pilot_name: str | None) -> list[JobFacts]:
    """The per-job facts, their summary and the extrapolation, into `result`."""
    facts = job_facts(b.manifest(), b.outputs, b.experiment, pilot_name)
    result.update(jobs=[vars(f) for f in facts], summary=summary_of(facts))
    result["extrapolation"] = extrapolate(b, result, size, images, facts)
    return facts


def report_again(a: argparse.Namespace) -> int:
    """--report-from: an earlier run's stages and data, its kept workdir's jobs read again."""
    if a.workdir is None or not (a.workdir / "jobs").is_dir():
        sys.exit("--report-from needs the --workdir that run kept (--keep)")
    result = json.loads(a.report_from.read_text())
    data = result["data"]
    a.views, a.images_per_view, a.patch_size = data["views"], data["images_per_view"], data["patch_size"]
    a.build_workers = result["stages"].get("build", {}).get("workers", a.build_workers)
    a.batch_size, a.eval_batch_size = result["budget"]["batch_size"], result["budget"]["eval_batch_size"]
    a.local = result["budget"]["mode"] == "local"
    b = Bench(a, a.workdir.resolve(), stages=result["stages"])
    pilot_name = next((j["name"] for j in result.get("jobs", []) if j.get("pilot")), None)
    facts = figures(b, result, tuple(data["size"]), a.views * a.images_per_view, pilot_name)
    result["reported_again"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report(a, b, result, facts)


def report(a: argparse.Namespace, b: Bench, result: dict[str, Any], facts: list[JobFacts]) -> int:
    console.print(stage_table(b.stages))
    console.print(job_table(facts))
    console.print(extrapolation_table(result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.json.with_name(a.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(a.json)
        console.print(f"wrote {a.json}")
    failed = [f for f in facts if f.state != "COMPLETED"]
    for f in failed:
        console.print(f"[red]{f.name}: {f.state}: {f.error or 'no error.txt'}[/red]", highlight=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
