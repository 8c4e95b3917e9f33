"""Adapters: every private name of another library that camvis uses, one module per library.

Layer: base (they import only their library and camvis base modules). Each private use is pinned by
tests/test_adapters.py, so that an upgrade which changes it fails there first, naming the adapter; the
library's pin in pyproject.toml is the range those tests passed with.
"""
