"""The login node, torch-free: grids, SLURM settings and sbatch scripts, what to run, submission under
a lock, the status display, doctor, smoke and prediction runs. What runs on the node is camvis.node;
what both sides read and write is camvis.bookkeeping."""
