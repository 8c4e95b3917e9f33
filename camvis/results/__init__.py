"""Runs on a login node (or as the array's dependent job), torch-free: finished jobs' scores
gathered into tables, paired comparisons and statistics."""
