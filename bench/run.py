"""Run benchmarks: ``python bench/run.py [NAME]`` runs bench/bench_<NAME>.py, or all of them.

Each benchmark is a script whose last output line is
``BENCH <name> <figure>=<value> ... ratio=<value>``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv[1:] or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    status = 0
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"no benchmark named {name!r} (looked for {script})", file=sys.stderr)
            return 2
        print(f"== bench {name}", flush=True)
        status |= subprocess.call([sys.executable, str(script)])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
