"""camvis-doctor's login-side checks: wall-clock seconds of the command as a fresh process (what a user
waits for on a login node), beside the load average. Target: under 10 s.

    .venv/bin/python benchmarks/bench_doctor.py                  # 3 repeats, no profile
    .venv/bin/python benchmarks/bench_doctor.py --repeats 5 --json benchmarks/results/doctor.json

Most of it is torch's import, asked in a subprocess (camvis.cluster.doctor.check_torch, cut at 8 s);
the other checks run beside it.
"""

from __future__ import annotations

NEEDS = """needs: nothing; with SLURM commands on PATH (bash slurm/cluster.sh start) the SLURM checks run too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 10.0


def once(folder: Path) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "camvis.cli.doctor"], cwd=folder, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("CAMVIS_")})
    seconds = time.perf_counter() - start
    torch_line = next((line for line in proc.stdout.splitlines() if " torch " in f" {line} "), "")
    return {"seconds": round(seconds, 2), "load_avg": load, "exit": proc.returncode, "torch": torch_line[:100]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(epilog=NEEDS, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_doctor_") as tmp:
        runs = [once(Path(tmp)) for _ in range(args.repeats)]
    median = statistics.median(r["seconds"] for r in runs)
    result = {"benchmark": "camvis-doctor (login side)", "median_s": median, "target_s": TARGET_S,
              "cpus": os.cpu_count(), "runs": runs}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
