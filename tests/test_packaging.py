"""The package as users install it: the wheel's contents and console scripts, and the layers of the code."""
import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {'ciaosr-upscale', 'ciaosr-train', 'ciaosr-test', 'ciaosr-benchmark', 'ciaosr-benchmark-speed',
           'ciaosr-quality-report', 'ciaosr-convert', 'ciaosr-app'}
LAYERS = {'ciaosr_arch': 0, 'realsr': 1, 'ciaosr': 2}  # a package imports only packages of lower layers
ENTRY_SCRIPTS = {ROOT / 'ciaosr_arch' / 'train.py', ROOT / 'ciaosr_arch' / 'test.py'}  # BasicSR-style scripts


def test_wheel_holds_the_packages_their_types_the_shipped_weights_and_the_console_scripts(tmp_path):
    build = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel, = tmp_path.glob('ciaosr-*.whl')
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith('.dist-info/entry_points.txt'))
    weights = {p.name for p in (ROOT / 'ciaosr_arch' / 'weights').glob('*.safetensors')}
    assert 'ciaosr_edsr_baseline.safetensors' in weights
    assert {f'ciaosr_arch/weights/{name}' for name in weights} <= names
    assert {n for n in names if n.startswith('ciaosr_arch/weights/')} == {f'ciaosr_arch/weights/{name}'
                                                                         for name in weights}  # logs, plots: docs/
    calibration = {f'ciaosr_arch/calibration/{p.name}' for p in (ROOT / 'ciaosr_arch' / 'calibration').glob('*.png')}
    assert len(calibration) == 4 and calibration <= names  # the int8 decode's calibration crops
    assert {'ciaosr/upscale.py', 'realsr/meta/realsrset_val.txt', 'ciaosr_arch/engine.py',
            'ciaosr_arch/cpuid_mask.c'} <= names  # the last: the CPUID mask's source, built where it is used
    assert {f'{package}/py.typed' for package in LAYERS} <= names  # typed packages (PEP 561)
    assert not any(n.startswith(('tests/', 'inference/', 'options/', 'experiments/')) for n in names)
    scripts = {line.split('=')[0].strip() for line in entry_points.split('[console_scripts]')[1].splitlines()
               if '=' in line}
    assert scripts == SCRIPTS


def first_party_imports(path):
    """Top-level first-party packages that a module imports (relative imports resolve to its own package)."""
    own = path.relative_to(ROOT).parts[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add(own if node.level else node.module.split('.')[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split('.')[0] for alias in node.names)
    return found & set(LAYERS)


def test_libraries_never_import_the_layers_above_them():
    upward = [f'{path.relative_to(ROOT)} imports {package}'
              for own in LAYERS for path in sorted((ROOT / own).rglob('*.py')) if path not in ENTRY_SCRIPTS
              for package in first_party_imports(path) if LAYERS[package] > LAYERS[own]]
    assert upward == []


def test_the_library_says_the_version_of_pyproject():
    import ciaosr_arch
    declared = re.search(r'^version = "(.+)"$', (ROOT / 'pyproject.toml').read_text(), re.M)[1]
    assert ciaosr_arch.__version__ == declared
