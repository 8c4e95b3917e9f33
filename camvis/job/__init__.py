"""Runs on a compute node, one grid point: device-resident batches, DDP set-up, training with
checkpoints, evaluation and visibility in metres, prediction and export; the submitit task."""
