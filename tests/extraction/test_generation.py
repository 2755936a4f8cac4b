"""Generation-pooled states on tiny models: what a `--generate N` run stores equals what a
hand-written `generate(output_hidden_states=True)` gives one prompt at a time; batches, early
stops, seeded sampling and resume change nothing; hooks come off after an error; chat templates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction.answer_states import AnswerStateRecorder, answer_weights, steps_needed
from extraction.capture import HFBackend
from extraction.generation import PromptFormat, Sampling, generate_batch, left_pad
from extraction.runner import execute
from settings.run import RunSettings
from store import open_store
from tests.support.tiny import write_jsonl

TEXTS = ["hi", "a much longer prompt about the weather", "what is two plus two?", "x y",
         "the cat sat", "tell me a story about a dragon"]  # fmt: skip
TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def llama(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_models["llama"]
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(
        folder
    )


@pytest.fixture(scope="module")
def chat_llama(tiny_models, tmp_path_factory):
    """The tiny Llama with a chat template (its tokenizer saved again with one)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat-llama") / "model"
    shutil.copytree(tiny_models["llama"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows = [{"id": f"s{i}", "text": t, "label": "ab"[i % 2]} for i, t in enumerate(TEXTS)]
    return write_jsonl(tmp_path_factory.mktemp("gen") / "prompts.jsonl", rows)


def _reference(model, tokenizer, text, n, convention, max_new_tokens):
    """The hand-written way: one prompt, generate(output_hidden_states=True), mean of steps."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             output_hidden_states=True, return_dict_in_generate=True,
                             pad_token_id=0, eos_token_id=2)  # fmt: skip
    steps = range(n) if convention == "producing" else range(1, n + 1)
    # hidden_states[step][L][:, -1] is resid_pre of block L at the step's last position
    per_layer = [
        torch.stack([out.hidden_states[s][layer][0, -1] for s in steps]).mean(0).numpy()
        for layer in range(len(out.hidden_states[0]) - 1)
    ]
    answer = out.sequences[0, ids.shape[1] :].tolist()
    return per_layer, answer, out.hidden_states[0]


@pytest.mark.parametrize("convention", ["producing", "own"])
@pytest.mark.slow  # seconds: generates twice per case
def test_stored_answer_mean_equals_hand_written_generate(
    tmp_path, tiny_models, llama, prompts_file, convention
):
    settings = RunSettings(
        model=str(tiny_models["llama"]), dataset=str(prompts_file), hooks=("resid_pre",),
        generate=3, max_new_tokens=5, answer_states=convention, batch_size=4, dtype="float32",
    )  # fmt: skip
    result = execute(settings, tmp_path / "store", progress=False)
    store = open_store(tmp_path / "store")
    stack, samples, layers = store.layer_vectors(result.run_id, "resid_pre", "answer_mean")
    last, _, _ = store.layer_vectors(result.run_id, "resid_pre", "last")
    model, tokenizer = llama
    for i, text in enumerate(TEXTS):
        expected, answer, prompt_states = _reference(model, tokenizer, text, 3, convention, 5)
        assert list(samples["answer_token_ids"][i]) == answer
        assert samples["answer"][i] == tokenizer.decode(answer, skip_special_tokens=True)
        assert samples["answer_states_pooled"][i] == 3
        for layer in layers:
            np.testing.assert_allclose(stack[layer, i], expected[layer], rtol=1e-4, atol=1e-5)
            # the prompt's `last`, from the left-padded batch, is the unpadded prompt's
            np.testing.assert_allclose(
                last[layer, i], prompt_states[layer][0, -1].numpy(), rtol=1e-4, atol=1e-5
            )
    manifest = result.manifest
    assert manifest.positions == ("last", "mean", "answer_mean")
    assert manifest.generation["answer_states"] == convention
    assert manifest.generation["prompt_format"] == "plain text"
    assert manifest.chat_template is None


def test_generation_prompt_positions_equal_a_plain_run(tmp_path, tiny_models, prompts_file):
    """`last` and `mean` of a left-padded generation run equal the right-padded plain run's."""
    common = dict(model=str(tiny_models["llama"]), dataset=str(prompts_file), batch_size=4,
                  hooks=("resid_post", "mlp_out"), layers="0,3", dtype="float32")  # fmt: skip
    plain = execute(RunSettings(**common), tmp_path / "s", progress=False)
    answered = execute(
        RunSettings(**common, generate=2, max_new_tokens=2), tmp_path / "s", progress=False
    )
    store = open_store(tmp_path / "s")
    for hook in ("resid_post", "mlp_out"):
        for position in ("last", "mean"):
            a, _ = store.vectors(plain.run_id, hook, 3, position)
            b, _ = store.vectors(answered.run_id, hook, 3, position)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _hooks(model) -> list:
    """Every hook on the model (transformers keeps output-capturing hooks of its own)."""
    return [(name, set(m._forward_hooks), set(m._forward_pre_hooks))
            for name, m in model.named_modules()]  # fmt: skip


def _capture(backend, tokenizer, prompts, keys, n, convention, sampling, stop_ids):
    lengths = [len(p) for p in prompts]
    steps = steps_needed(n, convention)
    sites = ("resid_post", "attn_out"), (0, 2)
    with AnswerStateRecorder(backend, *sites, lengths, steps, ("last", "mean")) as recorder:
        answers = generate_batch(backend.model, tokenizer, prompts, max_new_tokens=6,
                                 sampling=sampling, keys=keys, stop_ids=stop_ids)  # fmt: skip
    captured, pooled = recorder.pooled(answers.lengths, n, convention)
    return answers, captured, pooled


@pytest.mark.parametrize("convention", ["producing", "own"])
@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.9, seed=7)])
@pytest.mark.slow  # seconds: every prompt generated alone too
def test_batched_equals_one_at_a_time_with_early_stops(llama, convention, sampling):
    model, tokenizer = llama
    backend = HFBackend(model)
    before = _hooks(model)
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS]
    keys = list(range(10, 10 + len(TEXTS)))
    first = generate_batch(
        model, tokenizer, prompts, max_new_tokens=6, sampling=sampling, keys=keys
    )
    # Stop tokens that end some answers early (row 0 after 2 tokens, row 1 at once): the short
    # answers pool fewer states, and a batch keeps stepping for the rows still going.
    stops = (first.token_ids[0][1], first.token_ids[1][0])
    batched = _capture(backend, tokenizer, prompts, keys, 3, convention, sampling, stops)
    assert batched[0].stopped[0] and batched[0].lengths[0] <= 2
    assert batched[0].lengths[1] == 1
    for row, prompt in enumerate(prompts):
        alone = _capture(backend, tokenizer, [prompt], [keys[row]], 3, convention, sampling, stops)
        assert alone[0].token_ids[0] == batched[0].token_ids[row]
        assert alone[0].texts[0] == batched[0].texts[row]
        assert alone[2][0] == batched[2][row]
        for key, value in batched[1].items():
            torch.testing.assert_close(alone[1][key][0], value[row], rtol=1e-4, atol=1e-5)
    assert batched[2][1] == 1  # an answer that stops at once still pools one state
    assert _hooks(model) == before


@pytest.mark.slow  # seconds: several sampled generations
def test_seeded_sampling_depends_on_seed_and_key_only(llama):
    model, tokenizer = llama
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    hot = Sampling(temperature=1.0, seed=1)
    a = generate_batch(model, tokenizer, prompts, max_new_tokens=6, sampling=hot, keys=[5, 6, 7])
    b = generate_batch(model, tokenizer, prompts[::-1], max_new_tokens=6, sampling=hot,
                       keys=[7, 6, 5])  # fmt: skip
    assert a.token_ids == b.token_ids[::-1]
    other = generate_batch(model, tokenizer, prompts, max_new_tokens=6,
                           sampling=Sampling(temperature=1.0, seed=2), keys=[5, 6, 7])  # fmt: skip
    greedy = generate_batch(model, tokenizer, prompts, max_new_tokens=6)
    assert other.token_ids != a.token_ids != greedy.token_ids


def test_answer_weights():
    # producing: steps 0..N-1, fewer for answers that stopped early
    assert answer_weights([5, 2, 1], 3, "producing").T.tolist() == [
        [1, 1, 1], [1, 1, 0], [1, 0, 0],
    ]  # fmt: skip
    # own: answer tokens 1..N that are not the stop token; none -> the last prompt state
    assert answer_weights([5, 2, 1], 3, "own").T.tolist() == [
        [0, 1, 1, 1], [0, 1, 0, 0], [1, 0, 0, 0],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown answer states 'middle'"):
        answer_weights([3], 2, "middle")


def test_hooks_are_removed_after_an_error_inside_generation(llama):
    model, tokenizer = llama
    backend = HFBackend(model)
    before = _hooks(model)
    calls = []

    def fail_on_third_step(_module, _inputs, _output):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in step 3")

    breaker = backend.blocks[1].register_forward_hook(fail_on_third_step)
    try:
        with (
            pytest.raises(RuntimeError, match="boom in step 3"),
            AnswerStateRecorder(
                backend, ("resid_pre", "resid_post", "mlp_out", "attn_out"), (0, 1, 2, 3), [3], 2
            ) as recorder,  # fmt: skip
        ):
            generate_batch(model, tokenizer, [[5, 6, 7]], max_new_tokens=6)
    finally:
        breaker.remove()
    assert recorder._handles == []
    assert _hooks(model) == before
    # the model still generates as before
    assert generate_batch(model, tokenizer, [[5, 6, 7]], max_new_tokens=2).lengths == (2,)


def test_left_pad():
    ids, mask = left_pad([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[4], []], 0)


def test_chat_template_on_a_tiny_model(tmp_path, chat_llama, prompts_file, capsys):
    """`--chat-template` reads each text as a user turn; generation uses the template by itself."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from extraction.__main__ import main

    tokenizer = AutoTokenizer.from_pretrained(chat_llama)
    fmt = PromptFormat.for_tokenizer(tokenizer)
    assert fmt.name == "chat template"
    expected = tokenizer("<bos>user: hi<eos><bos>assistant:")["input_ids"]
    assert fmt.ids(tokenizer, "hi") == expected
    assert main(["run", "--model", str(chat_llama), "--dataset", str(prompts_file),
                 "--chat-template", "--hooks", "resid_pre", "--layers", "-1", "--dtype", "float32",
                 "--store", str(tmp_path / "s"), "--no-progress"]) == 0  # fmt: skip
    store = open_store(tmp_path / "s")
    plain = store.runs()[0]
    assert capsys.readouterr().out.strip() == plain.run_id
    answered = execute(
        RunSettings(model=str(chat_llama), dataset=str(prompts_file), layers="-1", generate=1,
                    max_new_tokens=1), tmp_path / "s", progress=False,
    ).manifest  # fmt: skip
    samples = store.samples(plain.run_id)
    assert samples["n_tokens"][0] == len(expected)
    model = AutoModelForCausalLM.from_pretrained(chat_llama).eval()
    with torch.no_grad():
        hidden = model(torch.tensor([expected]), output_hidden_states=True).hidden_states
    last, _ = store.vectors(plain.run_id, "resid_pre", 3, "last")
    np.testing.assert_allclose(last[0], hidden[3][0, -1].numpy(), rtol=1e-4, atol=1e-5)
    for manifest in (plain, answered):
        assert manifest.chat_template == TEMPLATE
    assert answered.generation["prompt_format"] == "chat template"
    assert list(store.samples(answered.run_id)["n_tokens"]) == list(samples["n_tokens"])


def test_chat_template_flag_without_a_template_is_one_line(tmp_path, tiny_models, prompts_file,
                                                          capsys):  # fmt: skip
    from extraction.__main__ import main

    code = main(["run", "--model", str(tiny_models["llama"]), "--dataset", str(prompts_file),
                 "--chat-template", "--store", str(tmp_path / "s"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "has no chat template" in err[0] and str(tiny_models["llama"]) in err[0]
    assert open_store(tmp_path / "s").runs() == []


@pytest.mark.slow  # seconds: three generation runs
def test_resumed_generation_run_equals_a_whole_one(tmp_path, tiny_models, prompts_file):
    settings = RunSettings(model=str(tiny_models["gpt2"]), dataset=str(prompts_file),
                           generate=2, max_new_tokens=4, temperature=0.8, seed=3,
                           batch_size=2)  # fmt: skip
    whole = execute(settings, tmp_path / "whole", progress=False)
    partial = execute(settings, tmp_path / "s", progress=False, flush_bytes=1)
    run_dir = tmp_path / "s" / "runs" / partial.run_id
    (run_dir / "_COMMITTED").unlink()
    for folder in ("vectors", "answers"):
        for part in sorted((run_dir / folder).glob("part-*.parquet"))[1:]:
            part.unlink()
    resumed = execute(settings, tmp_path / "s", resume=True, progress=False)
    assert resumed.run_id == partial.run_id and resumed.resumed_samples == 2
    a = open_store(tmp_path / "whole")
    b = open_store(tmp_path / "s")
    columns = ["id", "answer", "answer_stopped", "answer_states_pooled"]
    assert a.samples(whole.run_id)[columns].equals(b.samples(resumed.run_id)[columns])
    x, _ = a.vectors(whole.run_id, "resid_post", 1, "answer_mean")
    y, _ = b.vectors(resumed.run_id, "resid_post", 1, "answer_mean")
    np.testing.assert_array_equal(x, y)


def test_a_generation_run_commits_summaries_that_are_up_to_date(answers_store):
    """The answers join the sample table before the summaries stamp it, so the pages can read a
    fresh generation run (they once called its summaries out of date)."""
    from store import open_store

    store = open_store(answers_store["root"])
    assert store.summary_status(answers_store["run_id"]) is None
    assert store.samples(answers_store["run_id"])["answer"].str.len().min() > 0
