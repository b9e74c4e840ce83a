"""python inference/app.py ...: the same as the console script `ciaosr-app` (ciaosr/app.py)."""
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, so that it also runs uninstalled

from ciaosr.app import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
