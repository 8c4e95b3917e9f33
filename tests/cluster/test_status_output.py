"""camvis-status says what each column is and gives only advice that can be followed; local runs show
`pid N`; camvis-model summary names where its patch size comes from; each benchmark names its needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camvis.cluster import efficiency_view, monitor
from camvis.cluster.efficiency_view import Efficiency
from camvis.io import write_json
from test_monitor import EXP, FakeSlurm, collect, make_experiment, render

ROOT = Path(__file__).parents[2]


def test_best_column_says_what_scored_it(tmp_path: Path) -> None:
    make_experiment(tmp_path)
    text = render(monitor.status_renderable(collect(tmp_path, FakeSlurm())))
    assert "inner-val best" in text and "state from" in text and "train samples/s" in text
    for name in ("cat_fold1", "cat_fold3", "cat_fold4"):
        path = tmp_path / "outputs" / EXP / name / "progress.json"
        progress = json.loads(path.read_text())
        progress["best"] = {**(progress.get("best") or {}), "on": "heldout"}
        write_json(path, progress)
    assert "held-out best" in render(monitor.status_renderable(collect(tmp_path, FakeSlurm())))


def test_local_runs_show_pid(tmp_path: Path) -> None:
    make_experiment(tmp_path, mode="local")
    manifest_path = tmp_path / "jobs" / EXP / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["jobs"]["cat_fold3"]["job_id"] = "4242"
    write_json(manifest_path, manifest)
    line = next(ln for ln in render(monitor.status_renderable(collect(tmp_path))).splitlines() if "cat_fold3" in ln)
    assert "pid 4242" in line


@pytest.mark.parametrize("per_task, advice", [
    (4, "lower slurm.cpus_per_task"),
    (1, "slurm.cpus_per_task is 1 already"),
    (None, "a local or debug run: fewer threads per job (CAMVIS_NUM_THREADS)"),
])
def test_cpu_advice_is_never_impossible(per_task: int | None, advice: str) -> None:
    line = efficiency_view._what("cpu", [Efficiency(cpu=0.1, cpus=2, cpus_per_task=per_task)])
    assert advice in line
    if per_task != 4:
        assert "lower slurm.cpus_per_task" not in line


def test_model_summary_patch_size_from_the_store_or_assumed(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from camvis.cli.model import main as model_main
    from camvis.data.store_info import FORMAT_NAME, FORMAT_VERSION

    store = tmp_path / "s.zarr"
    write_json(store / "zarr.json", {"attributes": {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                                    "views": ["a_1", "b_1"], "factors": [2, 4], "patch_size": 16}})
    config = tmp_path / "job.yaml"
    config.write_text(f"data: {{store: {store}, factors: [2, 4]}}\nmodel: {{size_hidden: 4}}\n")
    assert model_main(["summary", str(config)]) == 0
    assert f"patch 16 (from {store})" in " ".join(capsys.readouterr().out.split())
    config.write_text(f"data: {{store: {tmp_path / 'none.zarr'}, factors: [2, 4]}}\nmodel: {{size_hidden: 4}}\n")
    assert model_main(["summary", str(config)]) == 0
    assert "patch 128 (assumed: no store at" in " ".join(capsys.readouterr().out.split())


def test_every_benchmark_help_names_what_it_needs() -> None:
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert 'NEEDS = """needs: ' in text and "ArgumentParser(epilog=NEEDS" in text, path.name
    assert "data/processed/camvis2.zarr" in (ROOT / "benchmarks" / "bench_launch.py").read_text().split('NEEDS = """')[1]
