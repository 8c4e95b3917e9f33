"""data.stage on the real local SLURM: two array tasks running at once share one staged copy.

The local cluster's nodes are processes of one machine, so its "node-local" folder is shared as
it is by the jobs of one node on a real cluster: one task copies the store, the other waits for
that copy (or finds it) and reuses it. The folder comes from a variable set in the job script
(slurm.setup), expanded where the job runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import test_slurm
from test_slurm import DEMO, TINY, all_ended, log_text, wait_for

from camvis.cluster.launch import launch
from camvis.config import TRAIN_SECTIONS, sections_hash
from camvis.data import stage

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
cluster = test_slurm.cluster  # the fixture: skips without the local cluster, fails if it should be up


def test_an_array_stages_the_store_once_and_keeps_its_train_hash(cluster: None, synth_store: Any,
                                                                 tmp_path: Path) -> None:
    node = tmp_path / "node-local"
    node.mkdir()
    run = launch(DEMO, ["experiment=it-stage", f"data.store={synth_store.path}", *TINY, "train.max_epochs=1",
                        "slurm.array_parallelism=2", f"slurm.setup=['export CAMVIS_IT_STAGE={node}']",
                        "data.stage=$CAMVIS_IT_STAGE"],
                 only=["fold=1"], outputs=tmp_path / "outputs", jobs_dir=tmp_path / "jobs")
    try:
        ids = [run.job_ids[name] for name in run.submitted]
        rows = wait_for("the staged array", lambda: all_ended(ids))
        assert {i: rows[i].state for i in ids} == {i: "COMPLETED" for i in ids}, \
            {n: log_text(run, n)[-2000:] for n in run.submitted}
        manifest = json.loads(run.manifest.read_text())
        copy = node / stage.STAGE_DIR / stage.store_digest(Path(synth_store.path))
        found = []
        for name in run.submitted:
            scores = json.loads((tmp_path / "outputs" / "it-stage" / name / "scores.json").read_text())
            found.append(scores["startup"]["stage"])
            assert scores["startup"]["staged_path"] == str(copy)
            config = manifest["jobs"][name]["config"]
            plain = {**config, "data": {k: v for k, v in config["data"].items() if k != "stage"}}
            assert config["data"]["stage"] == "$CAMVIS_IT_STAGE"
            assert scores["train_hash"] == sections_hash(plain, TRAIN_SECTIONS)
        assert sorted(found) == ["copied", "reused"]
        assert stage.copy_problem(copy, copy.name) is None
        assert sorted(p.name for p in copy.parent.iterdir()) == sorted([copy.name, f".{copy.name}.lock"])
    finally:
        subprocess.run(["scancel", *(i for i in (run.array_id, run.aggregate_id) if i)], capture_output=True)
