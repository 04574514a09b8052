"""A tiny name -> object registry with a duplicate guard and helpful errors."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries. Unknown names raise an error listing the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._families: dict[str, Callable[[str], T]] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries or name in self._families:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register_family(self, prefix: str, factory: Callable[[str], T]) -> None:
        """A parametrised family addressed as 'prefix:param' (e.g. 'alpha:0.5')."""
        if prefix in self._families or prefix in self._entries:
            raise ValueError(f"{self.kind} family {prefix!r} is already registered")
        self._families[prefix] = factory

    def names(self) -> list[str]:
        """Fixed names plus one pattern per family (e.g. 'alpha:<value>')."""
        return sorted(self._entries) + [f"{p}:<value>" for p in sorted(self._families)]

    def fixed_names(self) -> list[str]:
        return sorted(self._entries)

    def families(self) -> list[str]:
        return sorted(self._families)

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {name!r}")
        if name in self._entries:
            return self._entries[name]
        prefix, sep, param = name.partition(":")
        if sep and prefix in self._families:
            return self._families[prefix](param)
        raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except (KeyError, ValueError, TypeError):
            return False
        return True
