"""How the package's errors are worded: `CheckpointError`, raised by every module of the load story (`checkpoint`,
`safe_build`, `shipped`) and by the training-state readers (`compat`), and `listing`, the form of the lists of keys,
tensors or files at fault in an error message, and `byte_size`, the form of amounts of memory."""
from collections.abc import Sequence


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, malformed, or not a CiaoSR/LIIF generator."""


def listing(items: Sequence[str], limit: int = 8) -> str:
    """'a, b, c' for a list of strings: the first `limit`, then '... (N in all)'; 'none' for an empty list."""
    return ', '.join(items[:limit]) + (f' ... ({len(items)} in all)' if len(items) > limit else '') or 'none'


BYTE_UNITS = ('bytes', 'KiB', 'MiB', 'GiB', 'TiB')


def byte_size(count: float) -> str:
    """An amount of memory, `count` bytes, in the largest binary unit that keeps it at 1 or more, to three
    significant digits: '512 bytes', '1 KiB', '345 MiB', '2.5 GiB', '-20 MiB' (a shortfall), so that a small budget
    does not read '0.00 GiB'."""
    sign, count, power = '-' if count < 0 else '', abs(count), 0
    while power < len(BYTE_UNITS) - 1 and count >= 1024 ** (power + 1):
        power += 1
    value = count / 1024 ** power
    return f'{sign}{value:.0f} {BYTE_UNITS[power]}' if power == 0 or value >= 100 else \
        f'{sign}{value:.3g} {BYTE_UNITS[power]}'
