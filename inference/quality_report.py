"""python inference/quality_report.py ...:
the same as the console script `ciaosr-quality-report` (ciaosr/quality_report.py)."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, so that it also runs uninstalled

from ciaosr.scripts import quality_report  # noqa: E402  (as the console script: Ctrl-C, SIGTERM)

if __name__ == '__main__':
    sys.exit(quality_report())
