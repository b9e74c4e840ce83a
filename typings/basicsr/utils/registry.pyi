# BasicSR's registries, typed: `register()` without an object returns the class decorator (the untyped source returns
# None on the other path, so checkers took every `@X_REGISTRY.register()` for a call of None). Only this module is
# stubbed: pyright reads the rest of basicsr from the installed package.
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

_T = TypeVar('_T')

class Registry:
    def __init__(self, name: str) -> None: ...
    @overload
    def register(self, obj: None = None, suffix: str | None = None) -> Callable[[_T], _T]: ...
    @overload
    def register(self, obj: Any, suffix: str | None = None) -> None: ...
    def get(self, name: str, suffix: str = 'basicsr') -> Any: ...
    def __contains__(self, name: str) -> bool: ...
    def __iter__(self) -> Iterator[tuple[str, Any]]: ...
    def keys(self) -> Any: ...

DATASET_REGISTRY: Registry
ARCH_REGISTRY: Registry
MODEL_REGISTRY: Registry
LOSS_REGISTRY: Registry
METRIC_REGISTRY: Registry
