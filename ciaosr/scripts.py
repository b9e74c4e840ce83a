"""The installed console scripts ([project.scripts] in pyproject.toml), light to import.

Ctrl-C or SIGTERM at any moment ends a command in one way: a line `interrupted` on stderr, exit status 130, no
traceback. While a script imports its tool's module (PyTorch, OpenCV, BasicSR and the network: several seconds),
nothing has been written yet and the process ends at once (a KeyboardInterrupt raised inside a library's import can
leave the library half-initialized and fail with another error instead: NumPy's recursion error, seen in a test);
after that SIGTERM raises KeyboardInterrupt as Ctrl-C does, and a tool with work to wind up catches it itself first
(the upscaler: its summary, temporary files removed, 130; the web app, whose normal end it is: its cache folder
removed, 0). Exceptions: a signal that the parent set to be ignored (a shell's `command &`) stays ignored, and
`ciaosr-train`/`-test` leave SIGTERM to its default action, as their DataLoader workers do (routed, a SIGTERM to
the process group kills the workers before the main process winds up, which then reports them as killed).
"""
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
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
    os.write(2, b'interrupted\n')
    os._exit(INTERRUPTED)


def handle(signum: int, handler: Callable[[int, FrameType | None], Any]) -> None:
    """Installs `handler` for signal `signum` unless the signal is ignored (SIG_IGN, set by the parent process).
    ValueError outside the main thread, where Python cannot set signal handlers."""
    if signal.getsignal(signum) is not signal.SIG_IGN:
        signal.signal(signum, handler)


def route_sigterm() -> None:
    """SIGTERM (kill, torchrun, a service manager) raises KeyboardInterrupt in the main thread from now on, as Ctrl-C
    does (unless it is ignored). ValueError outside the main thread."""
    handle(signal.SIGTERM, raise_keyboard_interrupt)


@dataclass(frozen=True)
class ConsoleScript:
    """The entry point `function` of module `ciaosr.<module>`, imported when the script is called; `sigterm`: whether
    SIGTERM ends it as Ctrl-C does (else its default action).

    Calling it with argv (a list of str; None: sys.argv[1:]) imports the module with Ctrl-C (and SIGTERM) ending the
    process at once (`end_at_once`), then puts Ctrl-C's handler back, routes SIGTERM to KeyboardInterrupt
    (`route_sigterm`), runs the function and returns what it returns (the exit status, or None for 0); on a
    KeyboardInterrupt that reaches it, INTERRUPTED, after a line `interrupted` on stderr. Signals set to be ignored
    stay ignored. ValueError outside the main thread.
    """

    module: str
    function: str = 'main'
    sigterm: bool = True

    def __call__(self, argv: Sequence[str] | None = None) -> Any:
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            for signum in (signal.SIGINT, signal.SIGTERM) if self.sigterm else (signal.SIGINT,):
                handle(signum, end_at_once)
            try:
                entry = getattr(importlib.import_module(f'ciaosr.{self.module}'), self.function)
            finally:
                signal.signal(signal.SIGINT, ctrl_c)
                if self.sigterm:
                    route_sigterm()
            return entry(argv)
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr)
            return INTERRUPTED


upscale = ConsoleScript('upscale')
train = ConsoleScript('train', 'train', sigterm=False)
test = ConsoleScript('train', 'test', sigterm=False)
benchmark = ConsoleScript('benchmark')
benchmark_speed = ConsoleScript('benchmark_speed')
quality_report = ConsoleScript('quality_report')
convert = ConsoleScript('convert')
app = ConsoleScript('app')
