"""How the package's errors are worded: `CheckpointError`, raised by every module of the load story (`checkpoint`,
`safe_build`, `shipped`) and by the training-state readers (`compat`), and `listing`, the form of the lists of keys,
tensors or files at fault in an error message."""
from collections.abc import Sequence


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, malformed, or not a CiaoSR/LIIF generator."""


def listing(items: Sequence[str], limit: int = 8) -> str:
    """'a, b, c' for a list of strings: the first `limit`, then '... (N in all)'; 'none' for an empty list."""
    return ', '.join(items[:limit]) + (f' ... ({len(items)} in all)' if len(items) > limit else '') or 'none'
