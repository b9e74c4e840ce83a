"""How the package's errors are worded: `CheckpointError`, raised by every module of the load story (`checkpoint`,
`safe_build`, `shipped`) and by the training-state readers (`compat`), and `listing`, the form of the lists of keys,
tensors or files at fault in an error message, `error_line`, the form of an error passed on inside another message,
and `byte_size`, the form of amounts of memory."""
import math
import re
from collections.abc import Sequence


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, malformed, or not a CiaoSR/LIIF generator."""


class DataError(ValueError):
    """Training or validation images that cannot be used: a folder that is missing or holds none, a file that is not
    an image, images too small for the crops asked for (raised by the plugin's datasets)."""


def listing(items: Sequence[str], limit: int = 8) -> str:
    """'a, b, c' for a list of strings: the first `limit`, then '... (N in all)'; 'none' for an empty list."""
    return ', '.join(items[:limit]) + (f' ... ({len(items)} in all)' if len(items) > limit else '') or 'none'


SOURCE_LOCATION = re.compile(r'.*\.(?:c|cc|cpp|cxx|h|hpp):\d+:$')  # 'Exception from src/inference/src/cpp/core.cpp:84:'


def error_line(err: BaseException, named: bool = False) -> str:
    """The first line of an exception's message ('' for none), after its type's name with `named` ('KeyError: 101'):
    what a one-line message says of an error it passes on (a library's messages can run to many lines). Lines that
    only name a place in C++ source are passed over (OpenVINO's messages start with several, its reason comes
    after them), and a line that ends in ':' is joined to the next one ('FrontEnd API failed with GeneralFailure:
    ir: Could not open the file: "m.xml"')."""
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not SOURCE_LOCATION.fullmatch(line)]
    line = lines[0] if lines else ''
    for following in lines[1:]:
        if not line.endswith(':'):
            break
        line = f'{line} {following}'
    return f'{type(err).__name__}: {line}' if named else line


BYTE_UNITS = ('bytes', 'KiB', 'MiB', 'GiB', 'TiB')


def byte_size(count: float, up: bool = False) -> str:
    """An amount of memory, `count` bytes, in the largest binary unit that keeps it at 1 or more as shown (bytes and
    values from 100 up as whole numbers, else to three significant digits): '1 byte', '512 bytes', '1 KiB', '1.5 KiB',
    '345 MiB', '2.5 GiB', '-20 MiB' (a shortfall), so that a small budget does not read '0.00 GiB'. Rounded to the
    nearest shown value, or with `up` (a least amount, e.g. a budget that is needed) to the next one up."""
    sign, count, power = '-' if count < 0 else '', abs(count), 0
    while power < len(BYTE_UNITS) - 1 and round(count / 1024 ** power) >= 1024:
        power += 1
    value = count / 1024 ** power
    decimals = 0 if power == 0 or value >= 100 else 1 if value >= 10 else 2
    if up:  # (rounded to 9 decimals first, so that float noise such as 2.9600000000000004 stays 2.96)
        value = math.ceil(round(value * 10 ** decimals, 9)) / 10 ** decimals
    shown = f'{value:.0f}' if decimals == 0 else f'{value:.3g}'
    return f'{sign}{shown} {"byte" if shown == "1" and power == 0 else BYTE_UNITS[power]}'
