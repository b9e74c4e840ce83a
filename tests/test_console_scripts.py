"""The exit convention of every console script in pyproject's [project.scripts]: 2 for a command line that cannot be
used, 1 for an input that cannot be used, each with one `error: ...` line and no traceback; 130 when interrupted."""
import importlib
import runpy
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from ciaosr import scripts
from ciaosr.scripts import INTERRUPTED

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


BASICSR_COMMAND_LINES = ('ciaosr-train', 'ciaosr-test')  # BasicSR's own parser: its usage block, then the error


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_help_prints_and_exits_0(script, monkeypatch, capsys):
    """--help formats every option's text (a '%' in one, unescaped, was a TypeError from argparse)."""
    assert exit_status(script, ['--help'], monkeypatch) == 0
    assert 'usage: ' in capsys.readouterr().out


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_an_unknown_option_exits_2(script, monkeypatch, capsys):
    assert exit_status(script, ['--no-such-option'], monkeypatch) == 2
    err = capsys.readouterr().err
    if script in BASICSR_COMMAND_LINES:
        assert 'error: ' in err
    else:
        assert err.startswith('error: ') and err.endswith(' (see --help)\n') and err.count('\n') == 1, err


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


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('ignored', [False, True])
def test_an_interrupt_during_the_imports_ends_like_one_during_the_work(signum, ignored, tmp_path):
    """Ctrl-C or SIGTERM in the first seconds, while the script imports PyTorch and the network, gave a traceback
    (Ctrl-C) or a silent exit 143 (SIGTERM): now `interrupted` and 130, as during the work. The input is missing, so a
    script that got past its imports exits 1 instead, which it must where the parent set the signal to be ignored
    (a shell's `command &`)."""
    script = Path(sys.executable).parent / 'ciaosr-upscale'
    run = subprocess.Popen([script, '-i', str(tmp_path / 'missing.png'), '-o', str(tmp_path / 'out')],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=(lambda: signal.signal(signum, signal.SIG_IGN)) if ignored else None)
    time.sleep(0.5)  # the interpreter has started the script; its imports take seconds
    run.send_signal(signum)
    out, err = run.communicate(timeout=120)
    if ignored:
        assert run.returncode == 1 and 'missing.png' in err, err
    else:
        assert run.returncode == INTERRUPTED and err.strip().endswith('interrupted') and 'Traceback' not in err, err
        assert out == '' and not (tmp_path / 'out').exists()


def test_a_tool_without_a_handler_of_its_own_ends_on_an_interrupt_with_130(monkeypatch, capsys):
    def interrupted(argv=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib.import_module('ciaosr.convert'), 'main', interrupted)
    try:
        assert scripts.convert(['a.pth', 'b.safetensors']) == INTERRUPTED
    except KeyboardInterrupt:
        pytest.fail('the interrupt escaped the console script')
    assert capsys.readouterr().err == 'interrupted\n'


@pytest.mark.parametrize('path, module, function', [
    ('inference/inference_ciaosr.py', 'upscale', 'main'), ('inference/benchmark.py', 'benchmark', 'main'),
    ('inference/benchmark_speed.py', 'benchmark_speed', 'main'),
    ('inference/quality_report.py', 'quality_report', 'main'), ('inference/app.py', 'app', 'main'),
    ('ciaosr_arch/train.py', 'train', 'train'), ('ciaosr_arch/test.py', 'train', 'test')])
def test_the_repository_scripts_end_on_an_interrupt_as_the_console_scripts(path, module, function, monkeypatch,
                                                                          capsys):
    """A review: `python inference/benchmark.py` (and the others but the upscaler, and ciaosr_arch/train.py and
    test.py) ended Ctrl-C with a traceback and SIGTERM silently (143), though documented as the console scripts."""
    def interrupted(argv=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib.import_module(f'ciaosr.{module}'), function, interrupted)
    monkeypatch.setattr(sys, 'path', list(sys.path))  # (the scripts put the repository first)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / path), run_name='__main__')
    assert stop.value.code == INTERRUPTED and capsys.readouterr().err == 'interrupted\n'
