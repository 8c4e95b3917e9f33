"""Runs on a login node, torch-free: grids, SLURM settings and sbatch scripts, what to run,
submission under a lock, the manifest, SLURM queries and the status table."""
