"""python inference/benchmark.py ...: the same as the console script `ciaosr-benchmark` (ciaosr/benchmark.py)."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, so that it also runs uninstalled

from ciaosr.scripts import benchmark  # noqa: E402  (as the console script: Ctrl-C, SIGTERM)

if __name__ == '__main__':
    sys.exit(benchmark())
