"""The lifecycle shared by the trace stage's extra recorders (expert norms, lookahead): one hook per
MoE site for the length of a `with`, each appending to its site's list, and every handle removed
in `finally`, also when registering fails half-way (house style: hooks never outlive their use)."""

from __future__ import annotations


class SiteHooks:
    """Subclasses set `self._sites` and implement `_register(slot, site) -> handle`; `self._seen[slot]`
    is the list each hook appends to, emptied on entry and dropped on exit."""

    _sites: list

    def __init__(self) -> None:
        self._handles: list = []
        self._seen: list[list] = []

    def _register(self, slot: int, site):  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        self._seen = [[] for _ in self._sites]
        try:
            for slot, site in enumerate(self._sites):
                self._handles.append(self._register(slot, site))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles, self._seen = [], []
