"""What the login side and the node side both read and write about jobs, torch-free and display-free:
a job folder's file names and the finished rule (jobfolder), an experiment's files (experiment_files),
the manifest, an array's tasks file, SLURM's view (slurm_query, usage), store builds and the status data."""
