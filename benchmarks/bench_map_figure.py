"""Cost of one per-image map (camvis.plots.evaluation.plot_image_map) at paper size.

    python benchmarks/bench_map_figure.py [--step N]

Draws the map of a level-2 paper image (2070 x 3099 RGB, 500 markers) every `step` pixels, as
camvis.job.evaluate.write_figures does (step = ceil(width / MAP_WIDTH), 3 at paper size; 1 draws
the whole level, as before), and prints the seconds and the process's peak resident memory.
Run each step in its own process: the peak is the process's.
"""

from __future__ import annotations

NEEDS = """needs: nothing: a random paper-size level in memory.
"""

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from camvis.plots.evaluation import plot_image_map


def main() -> None:
    parser = argparse.ArgumentParser(epilog=NEEDS, formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=3, help="draw every STEP-th pixel (1: the whole level)")
    step = parser.parse_args().step
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (2070, 3099, 3), dtype=np.uint8)[::step, ::step]
    rows, cols = rng.uniform(0, 2070, 500) / step, rng.uniform(0, 3099, 500) / step
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        plot_image_map(image, rows, cols, rng.integers(0, 2, 500), rng.uniform(0, 1, 500),
                       Path(tmp) / "map.png", title="bench")
        seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(f"step {step}: {seconds:.2f} s, peak RSS {peak:.2f} GB, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
