"""What runs on a compute node as a submitit or sbatch entry: an array task's runner (array_task), the
store build (build_task), a prediction chunk (predict_task), the on-node doctor report (report).
The login side imports these modules to pickle their callables by path: torch only inside functions."""
