"""The installed console scripts ([project.scripts] in pyproject.toml), light to import.

Ctrl-C or SIGTERM at any moment ends a command in one way: a line `interrupted` on stderr, exit status 130, no
traceback. While a script imports its tool's module (PyTorch, OpenCV, BasicSR and the network: several seconds),
nothing has been written yet and the process ends at once (a KeyboardInterrupt raised inside a library's import can
leave the library half-initialized and fail with another error instead: NumPy's recursion error, seen in a test);
after that SIGTERM raises KeyboardInterrupt as Ctrl-C does, and a tool with work to wind up (the upscaler's summary
and temporary files, the web app's cache folder) catches it itself first.
"""
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

INTERRUPTED = 130  # the exit status of an interrupted command (128 + SIGINT, as shells report Ctrl-C)


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    """Signal handler: raises KeyboardInterrupt in the main thread, as Ctrl-C does (installed for SIGTERM)."""
    raise KeyboardInterrupt


def end_at_once(signum: int, frame: FrameType | None) -> NoReturn:
    """Signal handler while a script imports its tool: `interrupted` on stderr and exit status INTERRUPTED at once
    (`os._exit`: nothing to flush or clean up yet)."""
    os.write(sys.stderr.fileno(), b'interrupted\n')
    os._exit(INTERRUPTED)


def route_sigterm() -> None:
    """SIGTERM (kill, torchrun, a service manager) raises KeyboardInterrupt in the main thread from now on.
    ValueError outside the main thread, where Python cannot set signal handlers."""
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)


@dataclass(frozen=True)
class ConsoleScript:
    """The entry point `function` of module `ciaosr.<module>`, imported when the script is called.

    Calling it with argv (a list of str; None: sys.argv[1:]) imports the module with Ctrl-C and SIGTERM ending the
    process at once (`end_at_once`), then routes SIGTERM to KeyboardInterrupt (`route_sigterm`), puts Ctrl-C's
    handler back, runs the function and returns what it returns (the exit status, or None for 0); on Ctrl-C or
    SIGTERM before the function returns, INTERRUPTED, after a line `interrupted` on stderr.
    """

    module: str
    function: str = 'main'

    def __call__(self, argv: Sequence[str] | None = None) -> Any:
        ctrl_c = signal.signal(signal.SIGINT, end_at_once)
        signal.signal(signal.SIGTERM, end_at_once)
        try:
            entry = getattr(importlib.import_module(f'ciaosr.{self.module}'), self.function)
        finally:
            signal.signal(signal.SIGINT, ctrl_c)
            route_sigterm()
        try:
            return entry(argv)
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr)
            return INTERRUPTED


upscale = ConsoleScript('upscale')
train = ConsoleScript('train', 'train')
test = ConsoleScript('train', 'test')
benchmark = ConsoleScript('benchmark')
benchmark_speed = ConsoleScript('benchmark_speed')
quality_report = ConsoleScript('quality_report')
convert = ConsoleScript('convert')
app = ConsoleScript('app')
