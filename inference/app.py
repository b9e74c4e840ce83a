"""python inference/app.py ...: the same as the console script `ciaosr-app` (ciaosr/app.py)."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, so that it also runs uninstalled

from ciaosr.scripts import app  # noqa: E402  (as the console script: Ctrl-C, SIGTERM)

if __name__ == '__main__':
    sys.exit(app())
