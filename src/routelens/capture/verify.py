"""Is the recorded routing what the model really did? A check against references the recorder does
not share, run where the user is: on their transformers, on their model's first batch, and on a
tiny model of every family (`routelens families --verify`).

The recorder reads each MoE layer at one point (mostly the experts' inputs). A release that changes
what a block hands its experts (LongCat-Flash in 5.25 turns zero-computation choices into real ids
with weight 0) would change the recording without a sound, so the check never reads that point:

  router    the router module's own output: its chosen ids (exactly) and weights (within 1e-5),
            read from the `(logits, top_k_weights, top_k_index)` it returns, or from its logits
            under the family's rule where it returns less (DBRX, Llama 4);
  block     each MoE block run again on its own inputs with the router handing out the *recorded*
            routing: the block's code then applies the experts with the recorded weights, adds
            zero-computation experts as identity and its shared experts, and its output must equal
            the output it really gave (within 1e-5);
  probs     the recorded full scoring lies in its range and, where the family's weights derive
            from it, each token's weights are its scores at the chosen experts times one factor.

`check_padding` asks the other question a trace depends on: does a padded batch route each
document as the document alone would? Families where it does not are listed in
`routelens.models.overrides` and traced without padding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from routelens.capture.recorder import RoutingRecorder
from routelens.errors import RoutelensError
from routelens.models.families import RouterSite, RoutingSpec, Scoring, describe_model, find_routers
from routelens.models.hooks import Hooks, handing_out
from routelens.models.overrides import override

ATOL = RTOL = 1e-5


@dataclass(frozen=True)
class Mismatch:
    """What differs, at the first MoE layer where it does."""

    layer: int  # decoder-layer index
    what: str  # one line, e.g. "experts differ from the router's own choice on 3 of 36 tokens"

    def __str__(self) -> str:
        return f"{self.what}, layer {self.layer}"


# -- the references --------------------------------------------------------------------------------
def router_choice(site: RouterSite, output) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weights) the router itself chose, from its output (tokens, k)."""
    if site.adapter.reference is not None:
        index, weights = site.adapter.reference(site.router, site.owner, output)
    else:
        if not (isinstance(output, (tuple, list)) and len(output) >= 3 and not output[2].is_floating_point()):
            raise TypeError(
                f"{type(site.router).__name__} returns no (logits, weights, index); give its adapter a reference"
            )
        index, weights = output[2], output[1]
    return index.reshape(-1, index.shape[-1]).long(), weights.reshape(-1, weights.shape[-1]).float()


def _canonical(index: torch.Tensor, weights: torch.Tensor, empty: int):
    """Each token's choices ordered by id with empty slots dropped: (ids, weights, choices per token)."""
    order = index.argsort(dim=-1, stable=True)
    index, weights = index.gather(-1, order), weights.gather(-1, order)
    keep = index != empty
    return index[keep], weights[keep], keep.sum(-1)


def _tensors(value) -> list[torch.Tensor]:
    """The floating tensors of a module output (a tensor, or tuples and lists of them)."""
    if torch.is_tensor(value):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return [t for v in getattr(value, "values", lambda: [])() for t in _tensors(v)]


def _is_cache(value) -> bool:
    return any(c.__name__ == "Cache" and c.__module__.startswith("transformers") for c in type(value).__mro__)


def _cloned(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_cloned(v) for v in value)
    if isinstance(value, list):
        return [_cloned(v) for v in value]
    return value


class _Calls:
    """Per site, every call of its router (output) and of its block (inputs, output), by test hooks."""

    def __init__(self, sites: list[RouterSite]):
        self.router: list[list] = [[] for _ in sites]
        self.block: list[list] = [[] for _ in sites]
        self._hooks = Hooks()
        try:
            for slot, site in enumerate(sites):
                self._hooks.read_router_output(site, lambda out, seen=self.router[slot]: seen.append(_cloned(out)))
                self._hooks.reference_block(site, self._before_block(slot), self._on_block(slot))
        except BaseException:
            self.remove()
            raise

    def _before_block(self, slot: int):
        def before(args, kwargs):
            # a cache the block updates (a decoder layer owning its MoE) is copied as it was before the call
            kept = {k: copy.deepcopy(v) if _is_cache(v) else v for k, v in kwargs.items()}
            self.block[slot].append([_cloned(args), kept, None])

        return before

    def _on_block(self, slot: int):
        def after(output):
            self.block[slot][-1][2] = _cloned(output)

        return after

    def remove(self) -> None:
        self._hooks.remove()


# -- the check -------------------------------------------------------------------------------------
def check_routing(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    spec: RoutingSpec | None = None,
    *,
    body: nn.Module | None = None,
) -> Mismatch | None:
    """Run `model` (or its `body`, e.g. the model without its LM head) once on a batch and check what
    `RoutingRecorder` records against the router's own choice, the block's output recomputed from the
    recording, and the family's scoring; None when everything agrees, else the first `Mismatch`.
    Nothing of the model is changed afterwards."""
    spec = spec if spec is not None else describe_model(model)
    sites = find_routers(model)
    calls = _Calls(sites)
    try:
        with torch.no_grad(), RoutingRecorder(model, spec, store_probs=True) as recorder:
            (body or model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            routing = recorder.take()
    finally:
        calls.remove()
    empty = spec.no_expert_id
    weights_not_from_scores = override(spec.family).weights is not None
    for slot, site in enumerate(sites):
        found = _check_site(site, slot, spec, routing, calls, empty, weights_not_from_scores)
        if found is not None:
            return Mismatch(site.layer, found)
    return None


def _check_site(site, slot, spec, routing, calls, empty, weights_not_from_scores) -> str | None:
    # each router call with the block call it served, calls that routed no token left out
    pairs = [(o, b) for o, b in zip(calls.router[slot], calls.block[slot]) if _tokens(o)]
    if not pairs:
        return None
    outputs = [o for o, _ in pairs]
    recorded_i, recorded_w = routing.experts[:, slot].cpu(), routing.weights[:, slot].cpu()
    own = [router_choice(site, o) for o in outputs]
    own_i = torch.cat([i.cpu() for i, _ in own])
    own_w = torch.cat([w.cpu() for _, w in own])
    tokens = own_i.shape[0]
    if recorded_i.shape[0] != tokens:
        return f"{recorded_i.shape[0]} tokens recorded where the router chose for {tokens}"
    # (1) the router's own choice
    rec = _canonical(recorded_i, recorded_w, empty)
    ref = _canonical(own_i, own_w, empty)
    if not (torch.equal(rec[2], ref[2]) and torch.equal(rec[0], ref[0])):
        per_token = [not torch.equal(a, b) for a, b in zip(recorded_i.sort(-1).values, own_i.sort(-1).values)]
        differ = sum(per_token) if own_i.shape[1] == recorded_i.shape[1] else tokens
        return f"experts differ from the router's own choice on {differ} of {tokens} tokens"
    if not torch.allclose(rec[1], ref[1], rtol=RTOL, atol=ATOL):
        return f"weights differ from the router's own by up to {(rec[1] - ref[1]).abs().max().item():.3g}"
    # (2) the block's output recomputed from the recording, handed out by the router
    at = 0
    for output, (args, kwargs, real) in pairs:
        n = _tokens(output)
        index, weights = recorded_i[at : at + n, : site.top_k], recorded_w[at : at + n, : site.top_k]
        at += n
        device = _device(output)
        with torch.no_grad(), handing_out(site, index.to(device), weights.to(device)):
            again = site.owner(*args, **kwargs)
        for got, want in zip(_tensors(again), _tensors(real)):
            if got.shape != want.shape or not torch.allclose(got.float(), want.float(), rtol=RTOL, atol=ATOL):
                gap = (got.float() - want.float()).abs().max().item() if got.shape == want.shape else float("nan")
                return f"the block's output recomputed from the recorded routing differs by up to {gap:.3g}"
    # (3) the full scoring
    if routing.probs is not None:
        return _check_probs(site, slot, spec, routing, weights_not_from_scores)
    return None


def _tokens(output) -> int:
    first = output[0] if isinstance(output, (tuple, list)) else output
    return int(first.reshape(-1, first.shape[-1]).shape[0]) if torch.is_tensor(first) else 0


def _device(output) -> torch.device:
    first = output[0] if isinstance(output, (tuple, list)) else output
    return first.device


def _check_probs(site, slot, spec, routing, weights_not_from_scores: bool) -> str | None:
    """Scores in range; where the weights derive from them, weights = scores at the choice x one
    factor per token (renormalisation, scaling), so a wrong scoring rule is caught."""
    probs, experts, weights = (
        routing.probs[:, slot].cpu(),
        routing.experts[:, slot].cpu(),
        routing.weights[:, slot].cpu(),
    )
    scoring = site.adapter.scoring or Scoring.of_rule(spec.rule)
    if (
        not torch.isfinite(probs).all()
        or probs.min() < 0
        or (scoring is not Scoring.SQRTSOFTPLUS and probs.max() > 1 + 1e-5)
    ):
        return f"probs ({scoring}) fall outside their range"
    if weights_not_from_scores or site.top_k < 2 or site.hash_routed:
        return None
    E = spec.num_experts
    real = experts < E
    scores = probs.gather(-1, experts.clamp(max=E - 1))
    factor = torch.where(real & (scores > 1e-6), weights / scores.clamp(min=1e-12), torch.nan)
    lo = torch.nan_to_num(factor, nan=float("inf")).amin(-1)
    hi = torch.nan_to_num(factor, nan=-float("inf")).amax(-1)
    checked = real.sum(-1) >= 2
    if checked.any() and float(((hi - lo).abs() / hi.abs().clamp(min=1e-6))[checked].max()) > 1e-3:
        return f"weights are not the {scoring} scores at the chosen experts times one factor per token"
    return None


def refusal(family: str, found: Mismatch) -> RoutelensError:
    """The one-line error of a trace whose first batch records differently from what the model computes."""
    import transformers

    return RoutelensError(
        f"routelens would record this {family} model's routing wrongly on transformers "
        f"{transformers.__version__} ({found}); run `routelens families --verify {family}` to see it on a "
        "tiny model and report it, install the transformers version the family was verified on "
        "(`routelens families`), or pass --no-verify to record anyway (the manifest then says unverified)."
    )


# -- padding ---------------------------------------------------------------------------------------
def check_padding(
    model: nn.Module,
    documents: Sequence[torch.Tensor],
    *,
    pad_id: int = 0,
    left: bool = False,
    spec: RoutingSpec | None = None,
) -> Mismatch | None:
    """Does a padded batch of `documents` (1-D id tensors) route each as it alone would? Ids must
    agree and weights within 1e-5 on every real token; None when they do."""
    spec = spec if spec is not None else describe_model(model)
    ids, mask = _padded(documents, left, pad_id)
    with torch.no_grad(), RoutingRecorder(model, spec) as recorder:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
        batch = recorder.take()
        alone = []
        for d in documents:
            model(input_ids=d[None], attention_mask=torch.ones((1, len(d)), dtype=torch.long), use_cache=False)
            alone.append(recorder.take())
    keep = mask.reshape(-1).bool()
    # (L, real tokens, k): slot-major for the per-layer comparison below
    padded_e, padded_w = batch.experts[keep].transpose(0, 1).cpu(), batch.weights[keep].transpose(0, 1).cpu()
    single_e = torch.cat([a.experts.cpu() for a in alone]).transpose(0, 1)
    single_w = torch.cat([a.weights.cpu() for a in alone]).transpose(0, 1)
    for slot, layer in enumerate(spec.moe_layers):
        ids_differ = (padded_e[slot].sort(-1).values != single_e[slot].sort(-1).values).any(-1)
        if ids_differ.any():
            return Mismatch(
                layer,
                f"a padded batch routes {int(ids_differ.sum())} of {len(ids_differ)} tokens to "
                "other experts than each document alone",
            )
        a = padded_w[slot].gather(-1, padded_e[slot].argsort(-1))
        b = single_w[slot].gather(-1, single_e[slot].argsort(-1))
        if not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
            return Mismatch(
                layer,
                f"a padded batch moves weights by up to {(a - b).abs().max().item():.3g} against each document alone",
            )
    return None


# -- a family on the installed transformers ----------------------------------------------------------
VERIFIED = "verified"


@dataclass(frozen=True)
class FamilyVerdict:
    model_type: str
    verify: str  # "verified", "failed: <what differs, first layer>" or "skipped: <reason>"
    padding: str  # "exact", "changes routing (traced without padding)", or "" where not checked

    @property
    def ok(self) -> bool:
        return not self.verify.startswith("failed")


def _documents(vocab: int, lengths: Sequence[int] = (12, 9, 5), seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen) for n in lengths]


def _padded(documents: Sequence[torch.Tensor], left: bool, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `documents` padded with `pad_id` on the left or on the right."""
    width = max(len(d) for d in documents)
    ids = torch.full((len(documents), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(documents), width), dtype=torch.long)
    for r, d in enumerate(documents):
        where = slice(width - len(d), width) if left else slice(0, len(d))
        ids[r, where], mask[r, where] = d, 1
    return ids, mask


def verify_model(model: nn.Module, model_type: str, vocab: int) -> FamilyVerdict:
    """Verify one (tiny) model of a family: the routing on a right- and a left-padded batch, then
    whether padding moves the routing, which must agree with the overrides table."""
    spec = describe_model(model)
    documents = _documents(vocab)
    for left in (False, True):
        ids, mask = _padded(documents, left)
        found = check_routing(model, ids, mask, spec)
        if found is not None:
            side = "left" if left else "right"
            return FamilyVerdict(model_type, f"failed: {found} ({side}-padded batch)", "")
    moved = next((m for left in (False, True) if (m := check_padding(model, documents, left=left, spec=spec))), None)
    listed = override(model_type).unpadded
    if moved is not None and listed is None:
        return FamilyVerdict(
            model_type,
            f"failed: {moved}; list the family as unpadded in routelens/models/overrides.py",
            "changes routing",
        )
    return FamilyVerdict(model_type, VERIFIED, "exact" if moved is None else "changes routing (traced without padding)")


def verify_family(model_type: str) -> FamilyVerdict:
    """Build the family's tiny model on the installed transformers and verify it."""
    import warnings

    from routelens.models.catalog import family
    from routelens.models.tiny import VOCAB, build
    from routelens.models.unsupported import why_unsupported

    reason = why_unsupported(model_type)
    if reason is not None:
        return FamilyVerdict(model_type, f"skipped: {reason}", "")
    found = family(model_type)
    if found is None:
        return FamilyVerdict(model_type, "skipped: not a MoE family of the installed transformers", "")
    with warnings.catch_warnings(), _transformers_quiet():
        warnings.simplefilter("ignore")
        try:
            model = build(model_type, found.module)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            return FamilyVerdict(
                model_type,
                f"failed: its tiny model does not build ({first}); add its sizes to routelens/models/overrides.py",
                "",
            )
        try:
            return verify_model(model, model_type, VOCAB)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return FamilyVerdict(model_type, f"failed: {type(exc).__name__}: {first}", "")


def verify_families(
    model_types: Sequence[str] = (),
    *,
    rows=None,
    on_start: Callable[[str], None] | None = None,
    on_verdict: Callable[[FamilyVerdict], None] | None = None,
) -> dict[str, FamilyVerdict]:
    """`verify_family` for each of `model_types` (default: every family), what `routelens families
    --verify` runs; a name that is not a MoE family of the installed transformers is refused in one
    line before any model is built (`listing.families_to_verify`). `on_start` and `on_verdict` are
    told of each family as it starts and ends (the command's progress bar and lines)."""
    from routelens.capture.listing import families_to_verify

    verdicts = {}
    for model_type in families_to_verify(model_types, rows):
        if on_start is not None:
            on_start(model_type)
        verdicts[model_type] = verdict = verify_family(model_type)
        if on_verdict is not None:
            on_verdict(verdict)
    return verdicts


@contextmanager
def _transformers_quiet() -> Iterator[None]:
    """transformers' own notices (kernel fallbacks, RoPE remarks) off while tiny models build and run."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
