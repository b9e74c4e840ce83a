"""python ciaosr_arch/test.py -opt options/NAME.yml: BasicSR's test pipeline with this project's registrations,
the same as the console script `ciaosr-test` (ciaosr/train.py)."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder (its module names shadow)

from ciaosr.scripts import test  # noqa: E402  (as the console script: Ctrl-C, SIGTERM)

if __name__ == '__main__':
    sys.exit(test())
