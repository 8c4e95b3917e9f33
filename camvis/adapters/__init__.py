"""Adapters: every private name of another library that camvis uses, one module per library.

Layer: base (they import only their library and camvis base modules). Each private use is pinned by
tests/test_adapters.py, so that an upgrade which changes it fails there first, naming the adapter; the
library's pin in pyproject.toml is the range those tests passed with.

- submitit_api: submitit's private names (the one-file job arrays and the dry run's sbatch text).
- zarr: none. camvis.data.store_verify opens a store through zarr's public sync API; the internal
  zarr.core.sync it used saved about 15 ms an open (benchmarks/bench_store_open.py), too little for
  a private API. tests/test_adapters.py pins the public behaviour camvis builds on (chunk file names).
"""
