"""A tiny name -> factory registry that fails loudly on duplicates and unknown names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from semisup.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (classes or factory functions).

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny")
        ... def tiny(num_classes: int): ...
        >>> MODELS.get("tiny")  # doctest: +ELLIPSIS
        <function tiny ...>
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an object under `name`; a duplicate name is an error."""

        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Returns the object registered as `name`, or raises a UserError listing valid names."""
        if name not in self._items:
            raise UserError(
                f"unknown {self.kind} '{name}'. Valid {self.kind}s: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
