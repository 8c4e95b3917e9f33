"""camvis.job.native: C kernels compiled on first use, cached per CPU, and the torch fallback."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from camvis.job import native
from camvis.job.batches import BatchSource
from test_batches import make_store, reference_batch


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty private build cache, kernels enabled, the default compiler, no remembered loads."""
    monkeypatch.setenv("CAMVIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CAMVIS_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    native._load.cache_clear()
    yield tmp_path / "cache" / "native"
    native._load.cache_clear()


def fake_compiler(tmp_path: Path) -> Path:
    """A 'compiler' that writes half an output file, complains and fails; it logs each run."""
    script = tmp_path / "broken-cc"
    script.write_text('#!/bin/sh\necho run >> "$0.log"\nfor last; do :; done\n'
                      'echo partial > "$last"\necho "error: unknown flag" >&2\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_builds_once_per_cpu_and_reuses_the_build(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    built = []
    compile_ = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: (built.append(a[1]), compile_(*a)))
    assert native.load("batch_kernel").camvis_batch is not None
    assert [p.name for p in cache.iterdir()] == [built[0].name]  # no temporary left beside it
    native._load.cache_clear()  # a new process, as it were: the cached build is loaded
    native.load("batch_kernel")
    assert len(built) == 1
    native._load.cache_clear()
    monkeypatch.setattr(native, "_cpu_id", lambda: "x86_64 | model name=another CPU")
    native.load("batch_kernel")  # another kind of node sharing the cache gets its own build
    assert len(built) == 2 and built[0] != built[1] and len(list(cache.iterdir())) == 2


def test_no_compiler_falls_back_to_torch_ops_with_a_warning(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(native.NativeUnavailable, match="no C compiler 'no-such-cc' on PATH"):
        native.load("batch_kernel")
    store = make_store(21, 33, 8)
    with pytest.warns(RuntimeWarning, match="no C compiler.*fall back to torch ops"):
        source = BatchSource(store, (1, 2))
    assert not source.uses_kernel
    idx = np.array([0, 3, 5])
    torch.testing.assert_close(source.batch(torch.from_numpy(idx))[0],
                               torch.from_numpy(reference_batch(store, (1, 2), idx)))


def test_failed_build_leaves_no_library_and_is_not_retried(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = fake_compiler(tmp_path)
    monkeypatch.setenv("CC", str(compiler))
    for _ in range(2):
        with pytest.raises(native.NativeUnavailable, match=r"failed to build .*batch_kernel\.c \(exit 1\).*unknown flag"):
            native.load("batch_kernel")
    assert list(cache.iterdir()) == []  # the half-written output was removed
    assert Path(f"{compiler}.log").read_text().count("run") == 1  # remembered for the process


def test_disabled_by_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMVIS_NATIVE", "0")
    with pytest.raises(native.NativeUnavailable, match="disabled by CAMVIS_NATIVE=0"):
        native.load("batch_kernel")
    with pytest.warns(RuntimeWarning, match="CAMVIS_NATIVE=0"):
        assert not BatchSource(make_store(21, 33, 8), (1,)).uses_kernel
    assert not cache.exists()


def test_cpu_id_names_the_machine_and_its_features() -> None:
    cpu = native._cpu_id()
    assert cpu.startswith(os.uname().machine)
    if Path("/proc/cpuinfo").exists() and os.uname().machine == "x86_64":
        assert "flags=" in cpu and "model name=" in cpu


def test_baseline_isa_build_gives_the_same_batches_without_streaming(cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # What a CPU without AVX2 (or another architecture's compiler) gets: the portable loops.
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from camvis.job import batches

    monkeypatch.setattr(native, "FLAGS", tuple(f for f in native.FLAGS if f != "-march=native"))
    monkeypatch.setattr(batches, "STREAM_MIN_BYTES", 0)
    store = make_store(61, 45, 16, seed=9)
    source = BatchSource(store, (16, 1, 2))
    assert source.uses_kernel
    idx = torch.arange(store.n_patches)
    out = source._empty((store.n_patches, 12, 16, 16), channels_last=False)
    assert not source._kernel_batch(idx, out)  # streaming needs AVX2, which no baseline ISA has
    assert torch.equal(out, BatchSource(store, (16, 1, 2), kernel=False).batch(idx)[0])
