"""data.stage: a store copied to node-local scratch once per node, reused by the node's later jobs."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from camvis import locks
from camvis.config import load_job_config
from camvis.data import stage
from camvis.data.store import open_store
from camvis.errors import ConfigError, StoreError

_STAGE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from camvis.data import stage
    staged = stage.stage_store(sys.argv[1], Path(sys.argv[2]), on_wait=lambda who: print("waiting", flush=True))
    print(staged.action, staged.path, flush=True)
""")


def _same_tree(a: Path, b: Path) -> bool:
    """Every file of `a` is in `b` with the same bytes, and `b` holds nothing else but the manifest."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()} - {Path(stage.MANIFEST)}
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def _staged(store, root: Path) -> Path:
    return root / stage.STAGE_DIR / stage.store_digest(Path(store.path))


def test_two_concurrent_jobs_copy_once_and_the_copy_equals_the_source(synth_store, tmp_path):
    """Both processes find no copy and ask for the lock at once (this test holds it until both
    wait): the one that gets it copies, the other waits for that copy and reuses it."""
    root = tmp_path / "node"
    root.mkdir()
    digest = stage.store_digest(Path(synth_store.path))
    (root / stage.STAGE_DIR).mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with locks.exclusive(root / stage.STAGE_DIR / f".{digest}.lock", "the test"):
        jobs = [subprocess.Popen([sys.executable, "-c", _STAGE, str(synth_store.path), str(root)],
                                 stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
        assert [job.stdout.readline().strip() for job in jobs] == ["waiting", "waiting"]
    outs = [job.communicate(timeout=120)[0].split() for job in jobs]
    assert all(job.returncode == 0 for job in jobs)
    assert sorted(out[0] for out in outs) == ["copied", "reused"]
    staged = root / stage.STAGE_DIR / digest
    assert {out[1] for out in outs} == {str(staged)}
    assert _same_tree(Path(synth_store.path), staged)
    assert stage.store_digest(staged) == digest
    assert sorted(p.name for p in staged.parent.iterdir()) == sorted([digest, f".{digest}.lock"])
    assert open_store(staged).n_patches == synth_store.n_patches


def test_a_later_job_reuses_the_copy(synth_store, tmp_path):
    first = stage.stage_store(synth_store.path, tmp_path)
    second = stage.stage_store(synth_store.path, tmp_path)
    assert (first.action, second.action) == ("copied", "reused")
    assert first.path == second.path == _staged(synth_store, tmp_path)
    assert first.copy_id == second.copy_id and first.nbytes > 0 == second.nbytes


def _truncate_a_chunk(staged: Path) -> None:
    chunk = next(p for p in sorted((staged / "levels").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:-5])


def _drop_manifest(staged: Path) -> None:
    (staged / stage.MANIFEST).unlink()


def _other_digest(staged: Path) -> None:
    manifest = json.loads((staged / stage.MANIFEST).read_text())
    (staged / stage.MANIFEST).write_text(json.dumps({**manifest, "digest": "0" * 16}))


def _extra_file(staged: Path) -> None:
    (staged / "levels" / "stray").write_bytes(b"x")


def _garbled_attributes(staged: Path) -> None:
    meta = staged / "zarr.json"
    meta.write_bytes(b"{" * meta.stat().st_size)  # the same size: only the digest check sees it


@pytest.mark.parametrize("corrupt", [_truncate_a_chunk, _drop_manifest, _other_digest, _extra_file,
                                     _garbled_attributes])
def test_a_corrupt_or_partial_copy_is_refused_and_made_again(synth_store, tmp_path, corrupt):
    staged = stage.stage_store(synth_store.path, tmp_path).path
    corrupt(staged)
    assert stage.copy_problem(staged, staged.name) is not None
    again = stage.stage_store(synth_store.path, tmp_path)
    assert again.action == "copied" and again.path == staged
    assert _same_tree(Path(synth_store.path), staged)
    assert stage.copy_problem(staged, staged.name) is None


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from camvis.data import stage
    copy = stage._copy_files
    def half_then_die(source, target, files):
        copy(source, target, dict(list(files.items())[: len(files) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)
    stage._copy_files = half_then_die
    stage.stage_store(sys.argv[1], Path(sys.argv[2]))
""")


def test_a_job_killed_mid_copy_leaves_only_a_scratch_folder_the_next_job_reaps(synth_store, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _KILLED, str(synth_store.path), str(tmp_path)], env=env)
    assert run.returncode == -9
    final = _staged(synth_store, tmp_path)
    left = sorted(p.name for p in final.parent.iterdir() if not p.name.endswith(".lock"))
    assert not final.exists() and len(left) == 1 and left[0].startswith(f".{final.name}.tmp-")
    staged = stage.stage_store(synth_store.path, tmp_path)
    assert staged.action == "copied" and _same_tree(Path(synth_store.path), final)
    assert sorted(p.name for p in final.parent.iterdir()) == sorted([final.name, f".{final.name}.lock"])


def test_discard_removes_only_the_copy_it_was_given(synth_store, tmp_path):
    old = stage.stage_store(synth_store.path, tmp_path)
    assert stage.discard(old) and not old.path.exists()
    new = stage.stage_store(synth_store.path, tmp_path)
    assert not stage.discard(old)  # another job made a new copy meanwhile: it stays
    assert new.path.exists() and stage.copy_problem(new.path, new.path.name) is None


def test_a_store_without_checksums_cannot_be_staged(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps({"attributes": {"format": "x"}}))
    with pytest.raises(StoreError, match=r"s.zarr: no block checksums"):
        stage.stage_store(tmp_path / "s.zarr", tmp_path)
    with pytest.raises(StoreError, match=r"nope.zarr: no such store"):
        stage.stage_store(tmp_path / "nope.zarr", tmp_path)


# --------------------------------------------------------------------------- data.stage's value


def test_the_folder_expands_variables_on_the_node(tmp_path):
    (tmp_path / "scratch").mkdir()
    assert stage.resolve_root("$TMPDIR", {"TMPDIR": str(tmp_path)}) == tmp_path
    assert stage.resolve_root("${T}/scratch", {"T": str(tmp_path)}) == tmp_path / "scratch"
    assert stage.resolve_root(str(tmp_path), {}) == tmp_path


@pytest.mark.parametrize("value, environ, message", [
    ("$TMPDIR", {}, r"data.stage = '\$TMPDIR': environment variable TMPDIR is not set"),
    ("${SCRATCH}/x", {"SCRATCH": ""}, r"environment variable SCRATCH is not set \(or empty\)"),
    ("$REL", {"REL": "relative/dir"}, r"data.stage = '\$REL': expands to the relative path 'relative/dir'"),
    ("/no/such/folder", {}, r"data.stage = '/no/such/folder': /no/such/folder is not an existing folder"),
    ("scratch", {}, r"data.stage: expected an absolute path .* got the relative path 'scratch'"),
])
def test_bad_folders_are_errors_naming_the_key(value, environ, message):
    with pytest.raises(ConfigError, match=message):
        stage.resolve_root(value, environ)


@pytest.mark.parametrize("value, message", [
    ("scratch/camvis", r"data.stage: expected an absolute path .*relative path 'scratch/camvis'"),
    ("  ", r"data.stage: expected an absolute folder path or null"),
    ("5", r"data.stage: expected an absolute path"),
])
def test_a_relative_folder_is_a_config_error(value, message):
    with pytest.raises(ConfigError, match=message):
        load_job_config(None, [f"data.stage='{value}'"])
    assert load_job_config(None, ["data.stage=$TMPDIR"]).data.stage == "$TMPDIR"


def test_without_room_on_the_node_the_shared_path_is_read(synth_store, tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "FREE_MARGIN", 1 << 60)  # more than any disk has free
    staged = stage.stage_store(synth_store.path, tmp_path)
    assert staged.action == "skipped" and staged.path == Path(synth_store.path)
    assert "data.stage:" in staged.note and "free" in staged.note and str(synth_store.path) in staged.note
    assert not _staged(synth_store, tmp_path).exists()
