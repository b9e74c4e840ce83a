"""README's Python examples run as written, each on its own (as a user pastes one), in a folder holding the photos they
name."""
import re
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def python_examples():
    """The ```python blocks of README's "Python API" section, dedented."""
    section = (ROOT / 'README.md').read_text().split('\n## Python API\n')[1].split('\n## ')[0]
    blocks = re.findall(r'^( *)```python\n(.*?)^\1```', section, re.M | re.S)
    return [re.sub(rf'^{indent}', '', code, flags=re.M) for indent, code in blocks]


def test_python_api_examples_run_as_written(tmp_path, monkeypatch, photo):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.ascontiguousarray(photo[:24, :32])).save('photo.jpg', quality=95)
    Image.fromarray(np.ascontiguousarray(photo[:24, :32])).save('photo.png')
    examples = python_examples()
    assert len(examples) == 3
    for code in examples:
        namespace = {}
        exec(compile(code, 'README.md', 'exec'), namespace)  # noqa: S102  (the project's own README)
    assert Image.open('photo_x2.7.jpg').size == (86, 65)
    assert namespace['out'].shape == (60, 80, 3)
