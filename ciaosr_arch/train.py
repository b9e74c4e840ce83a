"""python ciaosr_arch/train.py -opt options/NAME.yml [--auto_resume]: BasicSR's trainer with this project's
registrations, the same as the console script `ciaosr-train` (ciaosr/train.py).
Multi-process: torchrun --nproc_per_node=N ciaosr_arch/train.py -opt ... --launcher pytorch
"""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not this folder (its module names shadow)

from ciaosr.scripts import train  # noqa: E402  (as the console script: Ctrl-C, SIGTERM)

if __name__ == '__main__':
    sys.exit(train())
