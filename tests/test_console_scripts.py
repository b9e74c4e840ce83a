"""The exit convention of every console script in pyproject's [project.scripts]: 2 for a command line that cannot be
used, 1 for an input that cannot be used, each with one `error: ...` line and no traceback."""
import importlib
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']


def exit_status(script, argv, monkeypatch):
    """The exit status of console script `script` run with `argv`, as its installed wrapper
    (`sys.exit(entry())`) gives it: 0 for None, the int itself, 1 for anything else (a message Python prints)."""
    module, function = SCRIPTS[script].split(':')
    monkeypatch.setattr(sys, 'argv', [script, *argv])  # BasicSR's trainer parses sys.argv itself
    try:
        result = getattr(importlib.import_module(module), function)(argv)
    except SystemExit as stop:
        result = stop.code
    return 0 if result is None else result if isinstance(result, int) else 1


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_an_unknown_option_exits_2(script, monkeypatch, capsys):
    assert exit_status(script, ['--no-such-option'], monkeypatch) == 2
    assert 'error: ' in capsys.readouterr().err


# A missing input named on the command line. The options file of ciaosr-train/-test is its command line (2, in
# test_options.py); a checkpoint it names that cannot be used exits 1 (test_training.py).
MISSING_INPUT = {
    'ciaosr-convert': ['{tmp}/missing.pth', '{tmp}/out.safetensors'],
    'ciaosr-benchmark': ['--model', 'bicubic', '--data-root', '{tmp}/missing', '--datasets', 'Set5', '--device', 'cpu'],
    'ciaosr-quality-report': ['--inputs', '{tmp}/missing', '--out', '{tmp}/out', '--device', 'cpu'],
    'ciaosr-benchmark-speed': ['--weights', '{tmp}/missing.pth'],
    'ciaosr-upscale': ['-i', '{tmp}/missing.png', '-o', '{tmp}/out'],
    'ciaosr-app': ['--model', '{tmp}/missing.pth', '-o', '{tmp}/out', '--no-browser'],
}


@pytest.mark.parametrize('script', sorted(MISSING_INPUT))
def test_a_missing_input_exits_1_with_one_line(script, tmp_path, monkeypatch, capsys):
    argv = [arg.format(tmp=tmp_path) for arg in MISSING_INPUT[script]]
    module, function = SCRIPTS[script].split(':')
    monkeypatch.setattr(sys, 'argv', [script, *argv])
    try:
        status = getattr(importlib.import_module(module), function)(argv)  # returns it (upscale, app): printed
        message = capsys.readouterr().err.strip()
        assert status == 1
    except SystemExit as stop:
        message = stop.code  # printed by Python on the way out, exit status 1
    assert isinstance(message, str) and message.startswith('error: ') and '\n' not in message, message
    assert 'missing' in message and not list(tmp_path.iterdir())  # named, and nothing written
