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
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an object under `name`; a duplicate name is an error."""

        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return wrap

    def register_prefix(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Resolves every name `prefix + rest` to `resolver(rest)` (a family of objects).

        Example:
            >>> MODELS.register_prefix("timm:", timm_factory)
            >>> MODELS.get("timm:resnet18")  # timm_factory("resnet18")
        """
        if prefix in self._prefixes:
            raise ValueError(f"{self.kind} prefix '{prefix}' is already registered")
        self._prefixes[prefix] = resolver

    def get(self, name: str) -> T:
        """Returns the object registered as `name`, or raises a UserError listing valid names."""
        if name in self._items:
            return self._items[name]
        for prefix, resolver in self._prefixes.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return resolver(name[len(prefix) :])
        families = [f"{prefix}<name>" for prefix in self._prefixes]
        raise UserError(
            f"unknown {self.kind} '{name}'. Valid {self.kind}s: "
            f"{', '.join([*self.names(), *families])}"
        )

    def names(self) -> list[str]:
        """All registered names, sorted (prefix families not included: see `prefixes`)."""
        return sorted(self._items)

    def prefixes(self) -> list[str]:
        """The registered name prefixes, sorted."""
        return sorted(self._prefixes)

    def __contains__(self, name: object) -> bool:
        if name in self._items:
            return True
        return isinstance(name, str) and any(
            name.startswith(p) and len(name) > len(p) for p in self._prefixes
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
