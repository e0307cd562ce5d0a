"""The one hook lifecycle: every hook routelens puts on a model is registered here, per MoE site, and
removed in `finally`, also when registering fails half-way (house style: hooks never outlive their use).

Three kinds of access, kept apart because they answer different questions:

- *reading* what the experts receive (`read_experts_input`, `read_router_input`,
  `read_router_output`, `read_experts_output`): the callback sees detached tensors and its return
  value is ignored, so a reader can never change the forward pass;
- an *independent reference* of the routing (`reference_block`): the block's own input and output,
  for the verifier, which must never read at the recorder's reading point;
- *overriding the selection* (`override_router_output`, `override_experts_input`): the callback's
  return value replaces what the family's router hands on (capacity drops, a recorded routing
  handed back for verification); `override_selection` scopes routing replay's override of the
  family's own top-k to one call of the block (`routelens.models.replay`).

`Hooks` composes: several users may register on one site, and each `with` removes only its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def experts_input_slots(args: tuple, kwargs: dict) -> tuple[int | str, int | str]:
    """Where `top_k_index` and `top_k_weights` sit in a call `experts(hidden_states, top_k_index,
    top_k_weights)`: a position in `args` or a keyword of `kwargs` (what a pre-hook replaces)."""
    slots: list[int | str] = [i for i in (1, 2) if i < len(args)]
    slots += [name for name, v in kwargs.items() if name != "hidden_states" and torch.is_tensor(v)][: 2 - len(slots)]
    assert len(slots) == 2, f"experts called without (index, weights): {len(args)} args, kwargs {list(kwargs)}"
    return slots[0], slots[1]


def experts_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`(top_k_index, top_k_weights)` of such a call, positional or by keyword."""
    return tuple(args[at] if isinstance(at, int) else kwargs[at] for at in experts_input_slots(args, kwargs))


class Hooks:
    """Handles of hooks on one model's MoE sites, removed together on `remove()` or at the end of `with`."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self._handles)

    def remove(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles = []

    def _add(self, handle) -> None:
        self._handles.append(handle)

    # reading -------------------------------------------------------------------------------------

    def read_experts_input(self, site, fn: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        """`fn(top_k_index, top_k_weights)` with what the site's experts are called with, detached."""

        def hook(module, args, kwargs):
            index, weights = experts_inputs(args, kwargs)
            fn(index.detach(), weights.detach())

        self._add(site.experts.register_forward_pre_hook(hook, with_kwargs=True))

    def read_router_input(self, site, fn: Callable[[torch.Tensor], None]) -> None:
        """`fn(hidden_states)`: the input the site's router receives, detached."""
        self._add(site.router.register_forward_pre_hook(lambda _m, args: fn(args[0].detach())))

    def read_router_output(self, site, fn: Callable[[object], None]) -> None:
        """`fn(output)`: what the site's router returns (a tensor or a tuple, as the family's router does)."""
        self._add(site.router.register_forward_hook(lambda _m, _a, output: fn(output)))

    def read_experts_output(self, site, fn: Callable[[tuple, dict, torch.Tensor], None]) -> None:
        """`fn(args, kwargs, output)` of every call of the site's experts module."""

        def hook(module, args, kwargs, output):
            fn(args, kwargs, output)

        self._add(site.experts.register_forward_hook(hook, with_kwargs=True))

    # independent reference -----------------------------------------------------------------------

    def reference_block(self, site, before: Callable[[tuple, dict], None], after: Callable[[object], None]) -> None:
        """`before(args, kwargs)` as the site's whole MoE block is called, `after(output)` as it returns."""
        self._add(site.owner.register_forward_pre_hook(lambda _m, args, kwargs: before(args, kwargs), with_kwargs=True))
        self._add(site.owner.register_forward_hook(lambda _m, _a, output: after(output)))

    # overriding the selection --------------------------------------------------------------------

    def override_router_output(self, site, fn: Callable[[object], object]) -> None:
        """The site's router returns `fn(output)` instead of `output` (None keeps it)."""
        self._add(site.router.register_forward_hook(lambda _m, _a, output: fn(output)))

    def override_experts_input(
        self, site, fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]
    ) -> None:
        """The site's experts are called with `fn(top_k_index, top_k_weights)` (None keeps them)."""

        def hook(module, args, kwargs):
            new = fn(*experts_inputs(args, kwargs))
            if new is None:
                return None
            args, kwargs = list(args), dict(kwargs)
            for at, value in zip(experts_input_slots(args, kwargs), new):
                if isinstance(at, int):
                    args[at] = value
                else:
                    kwargs[at] = value
            return tuple(args), kwargs

        self._add(site.experts.register_forward_pre_hook(hook, with_kwargs=True))

    def override_selection(self, site, enter: Callable[[], None], leave: Callable[[object], None]) -> None:
        """`enter()` as the module choosing the site's experts is called and `leave(output)` as it
        returns, also when it raises (`output` None then): the router, or the whole MoE block where
        the block turns the router's logits into the choice itself (DBRX's `choice_method`). Routing
        replay scopes its selection override this way, so the override never outlives the call
        (and the experts' own ops run outside it, at no cost)."""
        chooser = site.owner if site.adapter.choice_method is not None else site.router
        self.around_call(chooser, lambda _kwargs: enter(), leave)

    def around_call(self, module, enter: Callable[[dict], None], leave: Callable[[object], None]) -> None:
        """`enter(kwargs)` as `module` is called and `leave(output)` as the call ends, raising or not."""
        self._add(module.register_forward_pre_hook(lambda _m, _a, kwargs: enter(kwargs), with_kwargs=True))
        self._add(module.register_forward_hook(lambda _m, _a, output: leave(output), always_call=True))


def _write(site, output, index: torch.Tensor, weights: torch.Tensor):
    """The router's output carrying `index` and `weights` instead of its own choice."""
    if site.adapter.write is not None:
        return site.adapter.write(site.router, output, index, weights)
    logits, own_w, own_i, *rest = output
    new = (logits, weights.to(own_w.dtype).reshape(own_w.shape), index.to(own_i.dtype).reshape(own_i.shape), *rest)
    return type(output)(new) if isinstance(output, tuple) else list(new)


@contextmanager
def handing_out(site, index: torch.Tensor, weights: torch.Tensor) -> Iterator[None]:
    """While inside, the site's router (or the block's choice method) hands out `index`/`weights`."""
    if site.adapter.choice_method is not None:  # DBRX: the block turns logits into its choice itself
        name = site.adapter.choice_method
        setattr(site.owner, name, lambda logits: (weights.to(logits.dtype), index))
        try:
            yield
        finally:
            delattr(site.owner, name)  # the class's method again
        return
    with Hooks() as hooks:
        hooks.override_router_output(site, lambda out: _write(site, out, index, weights))
        yield


class SiteHooks:
    """A recorder hooking every MoE site of a model for the length of a `with`. Subclasses set
    `self._sites` and implement `_register(hooks, slot, site)`; `self._seen[slot]` is the list each
    hook appends to, emptied on entry and dropped on exit."""

    _sites: list

    def __init__(self) -> None:
        self._hooks = Hooks()
        self._seen: list[list] = []

    def _register(self, hooks: Hooks, slot: int, site) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        assert not len(self._hooks), f"{type(self).__name__} is not re-entrant"
        self._seen = [[] for _ in self._sites]
        try:
            for slot, site in enumerate(self._sites):
                self._register(self._hooks, slot, site)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._hooks.remove()
        finally:
            self._seen = []
