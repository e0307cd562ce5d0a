"""Generation traces (`--generate N`): each decode step's recorded routing is exactly what the
experts received at that step, captured by the test's own hooks, on padded batches of prompts of
different lengths in four families (greedy and sampled) and greedy in every other family of the
conformance suite that generates; the tokens are those `model.generate()` picks; rows, phases
and positions through `trace()`; and the teacher-forced agreement that the issue asks to measure.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from routelens.capture import describe_model
from routelens.corpus import parse_corpus_spec
from routelens.errors import RoutelensError
from routelens.models.families import find_routers
from routelens.models.tiny import VOCAB, build
from routelens.store.schema import lookahead_to_numpy, nested_to_numpy
from routelens.trace import TraceConfig, trace
from routelens.trace.generate import GenerationComputer, PromptShard, teacher_forced_agreement
from routelens.trace.plan import Window
from tests.capture.test_conformance import FAMILIES as CONFORMANCE
from tests.capture.test_conformance import (
    RECORDED,
    ROUTER_IS_THE_CHOICE,
    _canonical,
    _experts_calls,
    _hook_block_inputs,
    _llama4_truth,
    _router_calls,
    _router_truth,
)
from tests.trace.corpora import DOCS, write_txt

FAMILIES = ["mixtral", "olmoe", "qwen2_moe", "deepseek_v3"]
LENGTHS = (9, 3, 6)  # prompts of different lengths: left padding in the prefill
STEPS = 4


def _shard(lengths=LENGTHS, steps=STEPS, seed=0) -> PromptShard:
    gen = np.random.default_rng(seed)
    shard = PromptShard(0, generate=steps)
    for doc, m in enumerate(lengths):
        shard.windows.append(Window(gen.integers(3, VOCAB, m).astype(np.int32), shard.rows, doc, 0, 0))
        shard.rows += m + steps
    shard.next_doc = len(lengths)
    return shard


def _computer(model, tmp_path, **config) -> GenerationComputer:
    spec = parse_corpus_spec(f"p={write_txt(tmp_path / 'p.txt', DOCS)}")
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=2)
    cfg = TraceConfig(generate=STEPS, batch_size=8, weights_dtype="float32", progress=False, **config)
    return GenerationComputer(model, tokenizer, describe_model(model), cfg, [spec])


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build(family)
        return cache[family]

    return get


def _truth_rows(calls, shard: PromptShard, lengths):
    """Per MoE layer, the (index, weights) each recorded row should hold, from the test's hooks:
    call 0 is the prefill of the left-padded batch (B*T tokens), call j the j-th decode step (B)."""
    B, T = len(lengths), max(lengths)
    order = sorted(range(B), key=lambda i: -lengths[i])  # the computer batches longest first
    rows = {}
    for name, per_call in calls.items():
        assert len(per_call) == 1 + shard.generate, (name, len(per_call))  # one forward per step, nothing else
        index = np.empty((shard.rows, per_call[0][0].shape[-1]), np.int64)
        weights = np.empty(index.shape, np.float32)
        for step, (idx, wts) in enumerate(per_call):
            width = T if step == 0 else 1
            idx, wts = idx.reshape(B, width, -1).numpy(), wts.reshape(B, width, -1).float().numpy()
            for r, doc in enumerate(order):
                w, m = shard.windows[doc], lengths[doc]
                if step == 0:
                    index[w.row : w.row + m], weights[w.row : w.row + m] = idx[r, T - m :], wts[r, T - m :]
                else:
                    index[w.row + m + step - 1], weights[w.row + m + step - 1] = idx[r, 0], wts[r, 0]
        rows[name] = (index, weights)
    return rows


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampled"])
def test_each_decode_step_records_what_the_experts_received(family, sampling, models, tmp_path):
    settings = {"temperature": 0.9, "top_p": 0.8, "seed": 3} if sampling else {}
    _check_exact(models(family), family, tmp_path, **settings)


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in RECORDED if f not in FAMILIES])
def test_every_generating_family_records_each_decode_step_exactly(family, tmp_path):
    model = build(family, CONFORMANCE[family].module)
    if model.get_output_embeddings() is None:
        pytest.skip(f"{family}: the conformance model has no LM head, so it does not generate")
    _check_exact(model, family, tmp_path)


def _check_exact(model, family, tmp_path, **settings):
    computer = _computer(model, tmp_path, **settings)
    # a family whose routing padding moves is batched without padding: prompts of one length keep one batch
    lengths = (6, 6, 6) if computer.unpadded else LENGTHS
    shard = _shard(lengths)
    seen, handles = _experts_calls(model)
    routers = _router_calls(model, handles) if computer.routing.family in ROUTER_IS_THE_CHOICE else {}
    llama4 = computer.routing.family == "llama4"
    if llama4:  # its experts see scaled inputs; the reference needs each block's input too (as in conformance)
        _hook_block_inputs(model, seen, handles)
    try:
        table = computer.compute(shard)
    finally:
        for h in handles:
            h.remove()
    seen = _llama4_truth(model, seen) if llama4 else seen
    if routers:
        seen = _router_truth(model, seen, computer.routing.num_experts, routers)
    layer_order = sorted(seen, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    truth = _truth_rows({n: seen[n] for n in layer_order}, shard, lengths)
    experts = nested_to_numpy(table.column("experts"), computer.k)
    weights = nested_to_numpy(table.column("weights"), computer.k)
    empty = computer.routing.no_expert_id
    assert len(truth) == computer.L
    for layer, (index, wts) in enumerate(truth.values()):
        want_i, want_w, want_n = _canonical(torch.from_numpy(index), torch.from_numpy(wts), empty)
        got_i, got_w, got_n = _canonical(torch.tensor(experts[:, layer]), torch.tensor(weights[:, layer]), empty)
        assert torch.equal(got_n, want_n) and torch.equal(got_i, want_i), (family, layer)
        torch.testing.assert_close(got_w, want_w, **(dict(rtol=1e-5, atol=1e-6) if llama4 else dict(rtol=0, atol=0)))
    phase = table.column("phase").to_pylist()
    positions = table.column("position").to_numpy()
    for w, m in zip(shard.windows, lengths):
        assert phase[w.row : w.row + m + STEPS] == ["prefill"] * m + ["decode"] * STEPS
        assert positions[w.row : w.row + m + STEPS].tolist() == list(range(m + STEPS))
        assert table.column("token_id").to_numpy()[w.row : w.row + m].tolist() == w.ids.tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_are_the_ones_generate_picks(family, models, tmp_path):
    model = models(family)
    computer = _computer(model, tmp_path)
    shard = _shard()
    table = computer.compute(shard)
    ids, mask = computer.decoder.left_padded([w.ids for w in shard.windows], "cpu")
    with torch.no_grad():
        ref = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=STEPS,
            min_new_tokens=STEPS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[:, ids.shape[1] :]
    tokens = table.column("token_id").to_numpy()
    for r, (w, m) in enumerate(zip(shard.windows, LENGTHS)):
        assert tokens[w.row + m : w.row + m + STEPS].tolist() == ref[r].tolist(), family


def test_sampling_is_seeded_and_differs_from_greedy(models, tmp_path):
    model = models("mixtral")
    shard = _shard(steps=STEPS)

    def decoded(**settings):
        table = _computer(model, tmp_path, **settings).compute(shard)
        return table.column("token_id").to_numpy()

    greedy = decoded()
    first = decoded(temperature=1.5, seed=1)
    assert np.array_equal(first, decoded(temperature=1.5, seed=1))
    assert not np.array_equal(first, decoded(temperature=1.5, seed=2))
    assert not np.array_equal(first, greedy)
    # top_p that keeps only the most probable token is greedy decoding
    assert np.array_equal(decoded(temperature=1.5, top_p=1e-6, seed=5), greedy)


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_forced_agreement_is_measured_per_phase(family, models, tmp_path):
    model = models(family)
    computer = _computer(model, tmp_path)
    got = teacher_forced_agreement(computer, _shard())
    assert got["prefill"]["tokens"] == sum(LENGTHS) and got["decode"]["tokens"] == len(LENGTHS) * STEPS
    for phase in got.values():
        assert set(phase["layers"]) == {str(x) for x in computer.routing.moe_layers}
        # float32 tiny models: the cached decode and the full forward differ only by rounding
        assert phase["first"] >= 0.9 and phase["set_equal"] >= 0.85, (family, got)
    print(family, {p: (v["first"], v["set_equal"]) for p, v in got.items()})


def test_trace_writes_prompt_and_generated_rows(tiny_mixtral, tmp_path):
    corpus = write_txt(tmp_path / "p.txt", DOCS)
    tr = trace(tiny_mixtral, [f"p={corpus}"], tmp_path / "t", generate=5, progress=False, batch_size=2, seq_len=64)
    chunk = tr.load(["phase"])
    plain = trace(tiny_mixtral, [f"p={corpus}"], tmp_path / "plain", progress=False, seq_len=64).load()
    assert tr.manifest["generation"] == {
        "generate": 5,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
        "stops_at_eos": False,
    }
    assert tr.manifest["identity"]["generate"] == 5
    docs = np.unique(plain.doc_id)
    prompts = plain.position < 64  # a document longer than --seq-len is cut to its first window
    assert 0 < prompts.sum() < len(plain)
    assert tr.num_tokens == prompts.sum() + 5 * len(docs) == tr.manifest["totals"]["tokens"] == len(chunk)
    for d in docs:
        prompt = plain.token_id[(plain.doc_id == d) & prompts]
        rows = chunk.doc_id == d
        assert chunk.token_id[rows][: len(prompt)].tolist() == prompt.tolist()
        assert chunk.position[rows].tolist() == list(range(len(prompt) + 5))
        assert chunk.phase[rows].tolist() == [0] * len(prompt) + [1] * 5
    assert (
        trace(tiny_mixtral, [f"p={corpus}"], tmp_path / "t", generate=5, progress=False, batch_size=2, seq_len=64).path
        == tr.path
    )
    assert (
        "generate"
        not in trace(tiny_mixtral, [f"p={corpus}"], tmp_path / "plain", progress=False, seq_len=64).manifest["identity"]
    )


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"generate": -1}, "--generate"),
        ({"generate": 2, "temperature": -0.5}, "--temperature"),
        ({"generate": 2, "top_p": 0}, "--top-p"),
        ({"generate": 2, "ray": "local"}, "--ray"),
    ],
)
def test_bad_generation_settings_are_refused_in_one_line(settings, fragment):
    with pytest.raises(RoutelensError, match=fragment) as err:
        TraceConfig(**settings)
    assert "\n" not in str(err.value)


def test_decode_steps_record_each_chosen_experts_output_norm(models, tmp_path):
    """`--generate` with `--store-expert-norms`: every prefill and decode row holds the norms of its
    chosen experts' outputs, recomputed here from the hidden states each experts call received and
    the experts' fused weights."""
    from tests.pruning.test_expert_norms import _mixtral_expert_output

    model = models("mixtral")
    computer = _computer(model, tmp_path, store_expert_norms=True)
    shard = _shard()
    sites = find_routers(model)
    calls = {s.name: [] for s in sites}

    def truth_hook(name, experts):
        def hook(_module, args):
            hidden = args[0].reshape(-1, args[0].shape[-1])  # (tokens, H)
            index = args[1].reshape(len(hidden), -1)  # (tokens, k)
            with torch.no_grad():
                norms = torch.stack(
                    [
                        torch.stack(
                            [_mixtral_expert_output(experts, int(e), hidden[t : t + 1])[0].norm() for e in index[t]]
                        )
                        for t in range(len(hidden))
                    ]
                )
            calls[name].append((index.clone(), norms))

        return hook

    handles = [s.experts.register_forward_pre_hook(truth_hook(s.name, s.experts)) for s in sites]
    try:
        table = computer.compute(shard)
    finally:
        for h in handles:
            h.remove()
    truth = _truth_rows(calls, shard, LENGTHS)  # per layer: (index, norms) of every row
    experts = nested_to_numpy(table.column("experts"), computer.k)
    norms = nested_to_numpy(table.column("expert_norms"), computer.k).astype(np.float32)
    decode = np.array(table.column("phase").to_pylist()) == "decode"
    assert decode.sum() == len(LENGTHS) * STEPS
    for layer, (index, want) in enumerate(truth.values()):
        # the recorder orders each token's k by weight; compare slot by slot through the expert ids
        for row in range(shard.rows):
            by_expert = dict(zip(index[row].tolist(), want[row].tolist()))
            got = [by_expert[int(e)] for e in experts[row, layer]]
            np.testing.assert_allclose(norms[row, layer], got, rtol=2e-3, atol=1e-3, err_msg=f"layer {layer} row {row}")


def test_decode_steps_record_the_later_routers_lookahead(tmp_path):
    """`--generate` with `--lookahead 2`: every prefill and decode row holds what the routers d layers
    on choose from that layer's router input, recomputed here from each call's router inputs."""
    from transformers import MixtralForCausalLM

    from tests.conftest import tiny_mixtral_config

    torch.manual_seed(0)
    model = MixtralForCausalLM(tiny_mixtral_config(num_hidden_layers=3, vocab_size=VOCAB)).eval()
    computer = _computer(model, tmp_path, lookahead=2)
    shard = _shard()
    gates = [layer.mlp.gate for layer in model.model.layers]
    inputs = {i: [] for i in range(3)}
    handles = [
        g.register_forward_pre_hook(lambda _m, a, _i=i: inputs[_i].append(a[0].reshape(-1, a[0].shape[-1]).clone()))
        for i, g in enumerate(gates)
    ]
    try:
        table = computer.compute(shard)
    finally:
        for h in handles:
            h.remove()
    got = lookahead_to_numpy(table.column("lookahead"))  # (tokens, L, D, k)
    for layer in range(3):
        for d in (1, 2):
            if layer + d >= 3:
                assert (got[:, layer, d - 1] == -1).all()
                continue
            with torch.no_grad():  # the later router's top-2 on this layer's input, per call (prefill, then each step)
                calls = [
                    (torch.topk(x.float() @ gates[layer + d].weight.float().T, 2, dim=-1).indices,) * 2
                    for x in inputs[layer]
                ]
            index, _ = _truth_rows({"router": calls}, shard, LENGTHS)["router"]
            np.testing.assert_array_equal(got[:, layer, d - 1], index, err_msg=f"layer {layer} d {d}")
