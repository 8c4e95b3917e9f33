"""Built once, before any training: camvis2's raw layout, synthetic scenes, depth-balanced sampling,
normalization statistics and the Zarr patch store (building, verifying, reading)."""
