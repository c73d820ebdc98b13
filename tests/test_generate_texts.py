"""generate_texts and `minigpt generate --prompts-file`: many prompts in left-padded batches give
each prompt the texts it gets alone (greedy, beams; stop strings, EOS), in the prompts' order;
sampling is reproducible; errors name the prompt (its index, or its file and line)."""
import gc
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tqdm import tqdm
from test_generate import DigitsTokenizer, sharpened_pair, tiny_checkpoint, tiny_config  # noqa: F401 (a fixture)

from minigpt import generate, generate_texts
from minigpt.generation import GenerationStats
from minigpt.text_generation import PromptTooLong, generate_text

# Of different lengths and not in length order: sorting reorders them, batches of 2 mix lengths,
# and "" (<|endoftext|> alone) becomes an all-pad row beside longer prompts.
PROMPTS = ["hi", "To be, or not", "", "x", "a longer prompt of many bytes"]


@pytest.fixture(scope="module")
def model():
    # bos in the vocabulary, so the empty prompt has a start token (the tests' config keeps GPT-2's 50256)
    return sharpened_pair(tiny_config(bos_token_id=0))[0]


def alone(model, prompts, **kw) -> list[list[str]]:
    return [generate_text(model, DigitsTokenizer(), p, **kw) for p in prompts]


def ends(free: list[str]) -> tuple[int, list[str]]:
    """EOS and stop strings that end some of these texts (DigitsTokenizer: 3 digits an id) early:
    an id only text 3 writes (not first), and for texts 0 and 2 a string that begins inside a
    token and that no other text holds. Texts 1 and 4 run to the end."""
    ids = [[int(text[k:k + 3]) for k in range(0, len(text), 3)] for text in free]
    eos = next(i for i in ids[3][1:] if not any(i in other for other in ids[:3] + ids[4:]))

    def stop_in(row: int) -> str:
        return next(free[row][k:k + 4] for k in range(1, len(free[row]) - 4)
                    if k % 3 and not any(free[row][k:k + 4] in text for text in free if text != free[row]))

    return eos, [stop_in(0), stop_in(2)]


@pytest.mark.parametrize("batch_size", [2, 5])
@pytest.mark.parametrize("extra", [{}, dict(repetition_penalty=1.3, no_repeat_ngram_size=2), dict(num_beams=3)],
                         ids=["greedy", "greedy + penalties", "beams"])
@torch.no_grad()
def test_each_prompts_texts_in_a_batch_are_its_texts_alone(model, extra, batch_size):
    """The key property: batched texts equal each prompt generated alone, prompts of different
    lengths, in the given order, cut at stop strings that span tokens and at EOS."""
    free = [texts[0] for texts in alone(model, PROMPTS, max_new_tokens=12, eos_token_id=[], **extra)]
    assert len(set(free)) == len(free)  # the prompts lead to texts of their own
    eos, stops = ends(free)
    kw = dict(max_new_tokens=12, eos_token_id=eos, **extra)
    kw.update(num_return_sequences=2) if "num_beams" in extra else kw.update(stop=stops)  # beams take no stop strings
    expected = alone(model, PROMPTS, **kw)
    assert generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=batch_size, **kw) == expected
    if "num_beams" not in extra:  # texts 0 and 2 cut inside a token at their stop strings, 3 at EOS, 1 and 4 not
        cut = [texts[0] for texts in expected]
        assert [len(text) % 3 > 0 for text in cut] == [True, False, True, False, False]
        assert len(cut[3]) < 36 and len(cut[1]) == len(cut[4]) == 36
    else:
        assert min(len(text) for texts in expected for text in texts) < 36  # some beam ended at EOS


@torch.no_grad()
def test_a_pad_that_is_a_token_never_completes_a_stop_string_in_a_batch(model):
    """A row stops at the first token whose text holds a stop string; while another row runs on it
    is padded, and a pad_token_id that is a token has text. Cut over the pads, "kWX" (the row's
    "kW" and a pad "X") started before the "W" that stopped it: the batch gave "" where the
    prompt alone gives "k"."""
    from test_generate import ByteTokenizer

    tok, X = ByteTokenizer(), 88
    def first_two(prompt: list[int]) -> list[int]:
        return generate(model, torch.tensor([prompt]), max_new_tokens=2, eos_token_id=[])[0, 2:].tolist()

    # A prompt whose first two tokens are two different printable bytes, neither the pad's.
    prompt = next([72, p] for p in range(256) if all(32 <= t < 127 and t != X for t in first_two([72, p]))
                  and len(set(first_two([72, p]))) == 2)
    a, b = map(chr, first_two(prompt))
    kw = dict(max_new_tokens=4, eos_token_id=[], pad_token_id=X, stop=[b, a + b + "X"])
    assert generate_text(model, tok, prompt, **kw) == [a]
    assert generate_texts(model, tok, [prompt, prompt + [3]], **kw)[0] == [a]


@torch.no_grad()
def test_sampled_texts_are_reproducible_and_one_batch_draws_as_generate_text(model):
    tok = DigitsTokenizer()
    kw = dict(max_new_tokens=6, do_sample=True, temperature=1.5, num_return_sequences=3, eos_token_id=[])
    texts = generate_texts(model, tok, PROMPTS, batch_size=2, seed=7, **kw)
    assert [len(t) for t in texts] == [3] * len(PROMPTS) and all(len(s) == 18 for t in texts for s in t)
    assert generate_texts(model, tok, PROMPTS, batch_size=2, seed=7, **kw) == texts
    assert generate_texts(model, tok, PROMPTS, batch_size=2, seed=8, **kw) != texts
    # One prompt is one batch, drawn with the seed itself: what generate_text draws.
    assert generate_texts(model, tok, ["hi"], seed=7, **kw) == [generate_text(model, tok, "hi", seed=7, **kw)]
    # The same prompt in two batches: each batch draws from its own seed, not the same samples twice.
    twice = generate_texts(model, tok, ["hi"] * 4, batch_size=2, seed=7, **kw)
    assert twice[:2] != twice[2:]  # (with one seed for all batches, prompts 0, 1 would draw what 2, 3 draw)


@torch.no_grad()
def test_the_first_batch_draws_with_the_seed_itself_whatever_follows_it(model):
    """The shortest prompts run first, with `seed` itself: adding longer prompts (more batches)
    leaves their samples as they were."""
    tok = DigitsTokenizer()
    kw = dict(max_new_tokens=6, do_sample=True, temperature=1.5, eos_token_id=[], seed=7, batch_size=2)
    texts = generate_texts(model, tok, PROMPTS, **kw)  # sorted by length, the first batch is prompts 2 ("") and 3 ("x")
    assert generate_texts(model, tok, [PROMPTS[2], PROMPTS[3]], **kw) == [texts[2], texts[3]]


@torch.no_grad()
def test_a_per_prompt_parameter_reaches_its_prompt_in_whichever_batch(model):
    """temperature as one value per prompt: the greedy prompts (0) give their greedy text alone,
    wherever sorting puts them."""
    tok = DigitsTokenizer()
    temperature = torch.tensor([0.0, 2.0, 2.0, 0.0, 0.0])  # sorted by length, batches hold prompts (2, 3), (0, 1), (4)
    texts = generate_texts(model, tok, PROMPTS, batch_size=2, do_sample=True, seed=0, temperature=temperature,
                           max_new_tokens=8, eos_token_id=[])
    greedy = alone(model, PROMPTS, max_new_tokens=8, eos_token_id=[])
    assert [texts[i] for i in (0, 3, 4)] == [greedy[i] for i in (0, 3, 4)]
    assert all(texts[i] != greedy[i] for i in (1, 2))
    with pytest.raises(ValueError, match=r"temperature has shape \(3,\); one value per prompt is \(5,\)"):
        generate_texts(model, tok, PROMPTS, do_sample=True, temperature=temperature[:3])


@torch.no_grad()
def test_a_prompt_too_long_is_named_unless_truncate_left_keeps_its_end(model):
    tok = DigitsTokenizer()
    letters = "".join(chr(ord("a") + k % 26) for k in range(200))
    prompts = ["hi", letters[:119], letters[:120], letters]  # 128 positions: 10 new tokens leave room for 119
    with pytest.raises(PromptTooLong, match=r"prompts\[2\] is 120 tokens, but with max_new_tokens 10 the model's "
                                            r"context n_positions=128 has room for 119: shorten it, generate fewer "
                                            r"tokens \(at most 9 for this prompt\), or keep") as error:
        generate_texts(model, tok, prompts, max_new_tokens=10)
    assert (error.value.index, error.value.length, error.value.room) == (2, 120, 119)
    kept = generate_texts(model, tok, prompts, max_new_tokens=10, truncate_left=True, batch_size=2)
    assert kept == [generate_text(model, tok, p[-119:], max_new_tokens=10) for p in prompts]
    for truncate_left in (True, False):  # the fault is max_new_tokens', not a prompt's
        with pytest.raises(ValueError, match="max_new_tokens 129 leaves no room for a prompt in the model's context "
                                             r"n_positions=128: generate at most 128 tokens \(after a 1-token prompt"):
            generate_texts(model, tok, prompts, max_new_tokens=129, truncate_left=truncate_left)


@torch.no_grad()
def test_one_prompt_too_long_keeps_its_end_with_truncate_left_as_many_do(model):
    """An audit: generate_text's error named only the CLI's --truncate-left, and generate_text and
    stream_text had no truncate_left, where generate_texts has one. They now take it, keeping the
    same last tokens as generate_texts does, and the error names it for Python and the CLI."""
    from minigpt.text_generation import stream_text

    tok, letters = DigitsTokenizer(), "".join(chr(ord("a") + k % 26) for k in range(200))
    for text_function in (generate_text, lambda *a, **k: list(stream_text(*a, **k))):
        with pytest.raises(ValueError, match=r"shorten the prompt \(truncate_left=True of generate_text, stream_text and "
                                             r"generate_texts, or the CLI's --truncate-left, keeps its last tokens\)"):
            text_function(model, tok, letters, max_new_tokens=10)
    expected = generate_texts(model, tok, [letters], max_new_tokens=10, truncate_left=True)[0]
    assert expected == generate_text(model, tok, letters[-119:], max_new_tokens=10)  # 128 positions: room for 119
    assert generate_text(model, tok, letters, max_new_tokens=10, truncate_left=True) == expected
    assert ["".join(stream_text(model, tok, letters, max_new_tokens=10, truncate_left=True))] == expected
    assert generate_text(model, tok, letters[:50], max_new_tokens=10, truncate_left=True) == \
        generate_text(model, tok, letters[:50], max_new_tokens=10)  # a prompt that fits is left whole
    with pytest.raises(TypeError, match="truncate_left must be"):
        generate_text(model, tok, letters, truncate_left="yes")


@torch.no_grad()
def test_slide_takes_generate_texts_past_the_context(model):
    """slide: more new tokens than the context holds; only each prompt must fit, whole (no "generate
    fewer tokens": with slide that would not help)."""
    tok = DigitsTokenizer()
    letters = "".join(chr(ord("a") + k % 26) for k in range(130))
    prompts = ["hi", letters[:128]]
    texts = generate_texts(model, tok, prompts, max_new_tokens=150, slide=100, batch_size=2)
    assert texts == [generate_text(model, tok, p, max_new_tokens=150, slide=100) for p in prompts]
    assert len(texts[0][0]) == 3 * 150  # 150 new tokens of three digits each: past the 128-token context
    with pytest.raises(PromptTooLong, match=r"prompts\[1\] is 129 tokens, but the model's context n_positions=128 "
                                            r"must hold the whole prompt, even when it slides \(slide=100\): shorten "
                                            r"it, or keep"):
        generate_texts(model, tok, ["hi", letters[:129]], max_new_tokens=150, slide=100)


@torch.no_grad()
def test_generate_texts_refuses_what_is_not_a_list_of_prompts(model):
    tok = DigitsTokenizer()
    assert generate_texts(model, tok, []) == []
    with pytest.raises(TypeError, match="prompts must be a list of prompts, got str .for one prompt, use generate_text"):
        generate_texts(model, tok, "hi")
    with pytest.raises(TypeError, match=r"a list of ints: one prompt's token ids; pass a list of prompts \(\[ids\]\)"):
        generate_texts(model, tok, [5, 17, 42])
    with pytest.raises(TypeError, match=r"prompts\[1\] must be one text \(str\) or its token ids .*got NoneType"):
        generate_texts(model, tok, ["hi", None])
    with pytest.raises(ValueError, match="batch_size must be ≥ 1, got 0"):
        generate_texts(model, tok, ["hi"], batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer, got the bool True"):
        generate_texts(model, tok, ["hi"], batch_size=True)
    # Ids are prompts too (as the CLI passes them, encoded with its special tokens).
    assert generate_texts(model, tok, [tok.encode("hi"), "x"], max_new_tokens=4) == alone(model, ["hi", "x"], max_new_tokens=4)


@torch.no_grad()
def test_a_prompt_of_ids_past_the_vocabulary_is_named_before_any_batch(model, monkeypatch):
    """An audit: an id past the vocabulary in a later prompt ran the earlier batches, then failed
    without naming the prompt."""
    import minigpt.text_generation
    ran = []
    monkeypatch.setattr(minigpt.text_generation, "row_texts", lambda *a: ran.append(1))
    V = model.config.vocab_size
    for bad in (V, -1):
        with pytest.raises(ValueError, match=rf"prompts\[2\] holds token id {bad}, but the model's ids are 0 .. {V - 1}"):
            generate_texts(model, DigitsTokenizer(), ["hi", "x", [1, bad, 2]], batch_size=1, max_new_tokens=2)
    assert ran == []


@pytest.mark.parametrize("tokenizer, hint", [("gpt2", r"got str 'gpt2': load it with Tokenizer.from_pretrained\('gpt2'\)"),
                                             (None, "got NoneType None$")])
def test_a_tokenizer_that_is_no_tokenizer_is_named(model, tokenizer, hint):
    """A name failed as str.encode's "LookupError: unknown encoding: hi", None as an AttributeError."""
    message = r"tokenizer must be a Tokenizer \(Tokenizer.from_pretrained\(...\)\), or an object with encode and decode, "
    with pytest.raises(TypeError, match=message + hint):
        generate_text(model, tokenizer, "hi", max_new_tokens=2)
    with pytest.raises(TypeError, match=message + hint):
        generate_texts(model, tokenizer, ["hi"], max_new_tokens=2)


def test_generate_texts_refuses_a_streamer(model):
    """Rows run sorted by length, so a streamer would get them out of the prompts' order: refused
    by name before any batch runs."""
    seen = []
    with pytest.raises(ValueError, match="a streamer would see rows out of order"):
        generate_texts(model, DigitsTokenizer(), PROMPTS, max_new_tokens=2, streamer=seen.append)
    assert seen == []


@torch.no_grad()
def test_progress_and_stats_per_batch(model, capsys):
    texts, stats = generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=2, progress=True, max_new_tokens=3,
                                  return_stats=True)
    assert len(texts) == 5 and len(stats) == 3  # batches of 2, 2 and 1
    # Sorted by length, batches hold prompts of about one length: "" (<|endoftext|>) and "x", "hi" and
    # "To be, or not", then the longest alone.
    assert [s.prompt_tokens for s in stats] == [1 + 1, 2 + 13, 29]
    out, err = capsys.readouterr()
    assert out == "" and "5/5" in err  # the bar is on stderr
    generate_texts(model, DigitsTokenizer(), PROMPTS, max_new_tokens=3)
    assert capsys.readouterr().err == ""


@torch.no_grad()
def test_progress_is_a_bool_or_a_bar_to_move_on(model):
    """An audit: progress="yes" was taken for True (only a tqdm bar or a bool is meant); it is
    refused by name, as perplexity refuses it (both read `progress` through `given_or_new_bar`)."""
    bar = tqdm(file=io.StringIO())
    generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=2, max_new_tokens=2, progress=bar)
    assert bar.n == len(PROMPTS) and not bar.disable
    with pytest.raises(TypeError, match="progress must be True or False, got 'yes'"):
        generate_texts(model, DigitsTokenizer(), PROMPTS, max_new_tokens=2, progress="yes")


@torch.no_grad()
def test_beam_scores_come_with_each_prompts_texts_in_the_prompts_order(model):
    """return_scores=True through the text functions: scores[i] are prompts[i]'s beams' scores, best
    first, as generate_text gives them for that prompt alone (batched: up to float rounding), and
    as generate gives them for its ids; with return_stats the stats come last, as in generate."""
    kw = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2, eos_token_id=[])
    texts, scores = generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=2, return_scores=True, **kw)
    for prompt, its_texts, its_scores in zip(PROMPTS, texts, scores):
        alone_texts, alone_scores, stats = generate_text(model, DigitsTokenizer(), prompt, return_scores=True,
                                                         return_stats=True, **kw)
        assert its_texts == alone_texts and isinstance(stats, GenerationStats)
        assert its_scores == pytest.approx(alone_scores, rel=1e-4) and its_scores == sorted(its_scores, reverse=True)
    ids = torch.tensor([DigitsTokenizer().encode(PROMPTS[1])])
    _, ids_scores = generate(model, ids, torch.ones_like(ids), return_scores=True, **kw)
    assert ids_scores.tolist() == pytest.approx(scores[1], rel=1e-4)
    texts2, scores2, stats = generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=2, return_scores=True,
                                            return_stats=True, **kw)
    assert (texts2, scores2) == (texts, scores) and len(stats) == 3
    assert generate_texts(model, DigitsTokenizer(), PROMPTS, batch_size=2, **kw) == texts  # no scores asked: texts alone


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_cli_prompts_file_prints_each_prompts_texts_as_one_json_line(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    from minigpt.generate_cli import main

    prompts = ["To be", "or not\nto be", "", "that is the question, that is the"]
    path = write_jsonl(tmp_path / "p.jsonl", [json.dumps(prompts[0]), "", json.dumps({"prompt": prompts[1], "id": 7}),
                                              "  ", json.dumps(prompts[2]), json.dumps({"prompt": prompts[3]})])
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "6"]
    assert main(base + ["--prompts-file", path, "--temperature", "0", "--batch-size", "3", "--stats"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]  # stdout is JSON Lines only
    assert [row["prompt"] for row in rows] == prompts
    # Each line is its input's object with "texts" added: the "id" comes back, so outputs join to inputs.
    assert [list(row) for row in rows] == [["prompt", "texts"], ["prompt", "id", "texts"], ["prompt", "texts"],
                                           ["prompt", "texts"]]
    assert rows[1]["id"] == 7
    assert "batch 1 of 2: prompt" in err and "batch 2 of 2: prompt" in err and "4/4" in err
    # Each stats line is a line of its own, not run on from the bar's ("...prompt/s]batch 1 of 2"):
    # on a terminal "\r" returns to the line's start, where the bar is cleared and later redrawn.
    starts = [part for part in re.split("[\r\n]", err) if "batch" in part]
    assert [part[:12] for part in starts] == ["batch 1 of 2", "batch 2 of 2"], err
    for row in rows:  # each as the one-prompt CLI prints it
        assert main(base + ["--prompt", row["prompt"], "--temperature", "0"]) == 0
        assert capsys.readouterr().out == row["prompt"] + row["texts"][0] + "\n"
    sampled = base + ["--prompts-file", path, "-n", "2", "--seed", "3"]
    assert main(sampled) == 0
    first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(row["texts"]) for row in first] == [2] * 4
    assert main(sampled) == 0 and [json.loads(line) for line in capsys.readouterr().out.splitlines()] == first


def test_cli_prompts_file_shows_the_seed_it_drew_and_that_seed_draws_the_same_lines(tiny_checkpoint, tmp_path,  # noqa: F811
                                                                                   capsys):
    """A reproducibility audit: --prompts-file without --seed sampled from torch's unseeded RNG and
    never said which seed. Now it shows the seed it drew once on stderr, before the batches (the
    JSON lines on stdout are unchanged), and that one seed draws the whole file again: every batch's
    seed, in both windows of 16 batches here, is derived from it."""
    from minigpt.generate_cli import WINDOW_BATCHES, main

    prompts = [json.dumps("To be" * (i % 3)) for i in range(WINDOW_BATCHES + 2)]
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "3", "-n", "2", "--batch-size", "1",
            "--prompts-file", write_jsonl(tmp_path / "p.jsonl", prompts)]
    assert main(base) == 0
    out, err = capsys.readouterr()
    shown = re.findall(r"^minigpt generate: seed (\d+) \(drawn; add --seed \1 to draw the same output again\)$", err,
                       re.M)
    assert len(shown) == 1, err  # once, on a line of its own (the progress bar is on stderr too)
    assert [len(json.loads(line)["texts"]) for line in out.splitlines()] == [2] * len(prompts)
    assert main(base + ["--seed", shown[0]]) == 0
    again = capsys.readouterr()
    assert again.out == out and "minigpt generate: seed" not in again.err


def test_cli_beams_print_their_scores_and_json_lines_carry_them(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    """Beams on the CLI come with the scores that ranked them: in each beam's header, and as a
    "scores" list beside "texts" in --prompts-file's lines (the same numbers). With beams, an input
    object with a "scores" field is refused, as one with "texts" is; without beams it comes back."""
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--num-beams", "3", "-n", "2"]
    assert main(base + ["--prompt", "To be"]) == 0
    headers = re.findall(r"--- beam (\d) of 2 \(score (-?\d+\.\d{4})\) ---", capsys.readouterr().out)
    assert [h[0] for h in headers] == ["1", "2"]
    path = write_jsonl(tmp_path / "p.jsonl", [json.dumps({"prompt": "To be", "id": 1})])
    assert main(base + ["--prompts-file", path]) == 0
    row = json.loads(capsys.readouterr().out)
    assert list(row) == ["prompt", "id", "texts", "scores"] and len(row["scores"]) == 2
    assert [f"{score:.4f}" for score in row["scores"]] == [h[1] for h in headers]
    assert row["scores"][0] >= row["scores"][1]
    scored = write_jsonl(tmp_path / "s.jsonl", [json.dumps({"prompt": "To be", "scores": [1]})])
    assert main(base + ["--prompts-file", scored]) == 2
    assert ('s.jsonl line 1 has a "scores" field, which its output line sets to the generated scores: rename it'
            in capsys.readouterr().err)
    assert main(["--model", str(tiny_checkpoint), "--max-new-tokens", "3", "--temperature", "0",
                 "--prompts-file", scored]) == 0
    assert json.loads(capsys.readouterr().out)["scores"] == [1]


def test_cli_an_empty_prompts_file_says_so_before_loading_a_model(tiny_checkpoint, tmp_path, capsys,  # noqa: F811
                                                                   monkeypatch):
    """A runner's audit: a --prompts-file of blank lines loaded the model, printed nothing and exited
    0 without a word. No output is right for no input (a pipeline's empty grep), but it is said, and
    no model is loaded for it."""
    import minigpt.generate_cli
    from minigpt.generate_cli import main

    monkeypatch.setattr(minigpt.generate_cli, "load_model_and_tokenizer", lambda *a: pytest.fail("loaded a model"))
    path = write_jsonl(tmp_path / "p.jsonl", ["", "  "])
    assert main(["--model", str(tiny_checkpoint), "--prompts-file", path]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == f"minigpt generate: note: {path} holds no prompts\n"


def test_cli_prompts_file_reads_prompts_as_the_one_prompt_cli_does(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    """A prompt may hold <|endoftext|> (the user's own text, as --prompt's) and U+2028 (a JSON string
    may hold it as it is: only "\\n" ends a line); --batch-size 1 is a batch size like any other."""
    from minigpt.generate_cli import main

    prompts = ["To be<|endoftext|>or not", "that\u2028is the"]
    path = write_jsonl(tmp_path / "p.jsonl", [json.dumps(p, ensure_ascii=False) for p in prompts])
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "4", "--temperature", "0"]
    assert main(base + ["--prompts-file", path, "--batch-size", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.split("\n")[:-1]]  # (splitlines splits at U+2028)
    assert [row["prompt"] for row in rows] == prompts
    for row in rows:
        assert main(base + ["--prompt", row["prompt"]]) == 0
        assert capsys.readouterr().out == row["prompt"] + row["texts"][0] + "\n"



def stdin_of(monkeypatch, data: bytes) -> None:
    """Feed `data` to the command as its standard input (a pipe)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_cli_reads_prompts_from_standard_input_for_dash(tiny_checkpoint, tmp_path, capsys, monkeypatch):  # noqa: F811
    """`... | minigpt generate --prompts-file -` (and --prompt-file -): the same lines as from a file,
    Windows line ends included; errors name standard input."""
    from minigpt.generate_cli import main

    lines = [json.dumps("To be"), json.dumps({"prompt": "or not\nto be"})]
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--temperature", "0"]
    assert main(base + ["--prompts-file", write_jsonl(tmp_path / "p.jsonl", lines)]) == 0
    from_file = capsys.readouterr().out
    stdin_of(monkeypatch, "\r\n".join(lines).encode())
    assert main(base + ["--prompts-file", "-"]) == 0
    assert capsys.readouterr().out == from_file
    gc.collect()
    assert not sys.stdin.buffer.closed  # reading it left the process's stdin open
    stdin_of(monkeypatch, b'"a"\n{"text": "b"}\n')
    assert main(base + ["--prompts-file", "-"]) == 2
    assert 'standard input line 2 is no prompt' in capsys.readouterr().err
    stdin_of(monkeypatch, b'"a"\n"' + b"z" * 130 + b'"\n')
    assert main(base + ["--prompts-file", "-"]) == 2
    assert "standard input line 2: the prompt is 130 tokens" in capsys.readouterr().err
    stdin_of(monkeypatch, b'"\xff"\n')
    assert main(base + ["--prompts-file", "-"]) == 2
    assert "cannot read --prompts-file: standard input is not UTF-8 text: byte 0xff at offset 1" in capsys.readouterr().err
    # --prompt-file - : the whole of standard input is one prompt.
    assert main(base + ["--prompt", "To be\nor"]) == 0
    one = capsys.readouterr().out
    stdin_of(monkeypatch, b"To be\r\nor")
    assert main(base + ["--prompt-file", "-"]) == 0
    assert capsys.readouterr().out == one

def test_cli_prompt_files_skip_a_leading_byte_order_mark(tiny_checkpoint, tmp_path, capsys, monkeypatch):  # noqa: F811
    """An audit: a --prompts-file that Notepad saved (a UTF-8 BOM first) was refused, "line 1 is not
    JSON: Unexpected UTF-8 BOM"; --prompt-file made the BOM the prompt's first character."""
    from minigpt.generate_cli import main

    lines = [json.dumps("To be"), json.dumps({"prompt": "or not"})]
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--temperature", "0"]
    assert main(base + ["--prompts-file", write_jsonl(tmp_path / "p.jsonl", lines)]) == 0
    plain = capsys.readouterr().out
    (tmp_path / "bom.jsonl").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    assert main(base + ["--prompts-file", str(tmp_path / "bom.jsonl")]) == 0
    assert capsys.readouterr().out == plain
    stdin_of(monkeypatch, "\ufeff".encode() + "\n".join(lines).encode())
    assert main(base + ["--prompts-file", "-"]) == 0
    assert capsys.readouterr().out == plain
    assert main(base + ["--prompt", "To be"]) == 0
    one = capsys.readouterr().out
    (tmp_path / "bom.txt").write_text("\ufeffTo be", encoding="utf-8")
    assert main(base + ["--prompt-file", str(tmp_path / "bom.txt")]) == 0
    assert capsys.readouterr().out == one


@pytest.mark.parametrize("lines, flags, message", [
    (['"a"', '{"text": "b"}'], [], 'p.jsonl line 2 is no prompt: expected a JSON string or an object with a "prompt"'),
    (['"a"', '', '"b'], [], "p.jsonl line 3 is not JSON: Unterminated string"),
    (['["a"]'], [], "p.jsonl line 1 is no prompt"),
    (['"a"', '{"prompt": "b", "texts": []}'], [],  # the output's field: it would be overwritten
     'p.jsonl line 2 has a "texts" field, which its output line sets to the generated texts: rename it'),
    (['"a"', '', '"' + "z" * 130 + '"'], ["--max-new-tokens", "10"],  # the line in the file, blank lines counted
     "p.jsonl line 3: the prompt is 130 tokens, but with --max-new-tokens 10 the model's context n_positions=128 has room "
     "for 119"),
    (['"a"'], ["--stream"], "--prompts-file prints each prompt's texts whole, as one JSON line when its batches are done; "
                            "it does not take --stream"),
    (['"a"'], ["--explain"], "it does not take --explain"),
    (['"a"'], ["--batch-size", "0"], "--batch-size must be ≥ 1, got 0"),
])
def test_cli_prompts_file_errors_name_the_line_or_the_flag(tiny_checkpoint, tmp_path, capsys, lines, flags,  # noqa: F811
                                                           message):
    from minigpt.generate_cli import main

    path = write_jsonl(tmp_path / "p.jsonl", lines)
    assert main(["--model", str(tiny_checkpoint), "--prompts-file", path, "--temperature", "0", *flags]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""


def test_cli_batch_size_needs_prompts_file_and_one_source_of_prompts(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    from minigpt.generate_cli import main

    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--batch-size", "8"]) == 2
    assert "--batch-size sets how many prompts of --prompts-file run at once: it needs --prompts-file" in \
        capsys.readouterr().err
    path = write_jsonl(tmp_path / "p.jsonl", ['"a"', '"b"'])
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--prompts-file", path])
    assert "not allowed with argument" in capsys.readouterr().err
    # --truncate-left keeps the end of a long prompt; the line still shows the prompt as written.
    long = "To be, or not to be, " * 20
    write_jsonl(tmp_path / "p.jsonl", [json.dumps(long), '"a"'])
    assert main(["--model", str(tiny_checkpoint), "--prompts-file", path, "--max-new-tokens", "10", "--temperature", "0",
                 "--truncate-left"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["prompt"] for row in rows] == [long, "a"] and all(len(row["texts"]) == 1 for row in rows)


def test_cli_prompts_file_prints_each_window_as_it_is_done(tiny_checkpoint, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A long file runs a window of batches at a time and prints each window's lines when it is done:
    a run stopped in its second window keeps the first window's lines. Windows change nothing in
    greedy texts, and sampled ones stay reproducible."""
    import minigpt.generate_cli as cli

    prompts = ["To be", "or not", "to be, that", "is the question"]
    path = write_jsonl(tmp_path / "p.jsonl", [json.dumps(p) for p in prompts])
    base = ["--model", str(tiny_checkpoint), "--prompts-file", path, "--max-new-tokens", "5", "--batch-size", "1"]
    assert cli.main(base + ["--temperature", "0"]) == 0
    whole = capsys.readouterr().out  # one window: 4 prompts, 16 batches of 1 fit
    monkeypatch.setattr(cli, "WINDOW_BATCHES", 2)  # windows of 2 prompts
    assert cli.main(base + ["--temperature", "0"]) == 0
    assert capsys.readouterr().out == whole
    sampled = base + ["--seed", "5"]
    assert cli.main(sampled) == 0
    first = capsys.readouterr().out
    assert cli.main(sampled) == 0 and capsys.readouterr().out == first

    real, calls = cli.generate_texts, []

    def stops_in_the_second_window(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "generate_texts", stops_in_the_second_window)
    assert cli.main(base + ["--temperature", "0"]) == 130
    assert capsys.readouterr().out == "".join(whole.splitlines(keepends=True)[:2])


def test_cli_prompts_file_gives_every_batch_a_seed_of_its_own_across_windows(tiny_checkpoint, tmp_path,  # noqa: F811
                                                                             capsys):
    """A batch-inference audit: window w (of 16 batches) was seeded with batch_seeds(seed, windows)[w],
    the very seed window 0's batch w draws with, so one prompt given 34 times at --batch-size 1 came
    back with the same text for prompts 1 and 16, and 2 and 32. Every batch draws from a seed of its
    own now, and window 0 still draws what one generate_texts call over its prompts draws."""
    from minigpt import GPT, Tokenizer
    from minigpt.generate_cli import WINDOW_BATCHES, main

    # Small weights: logits near 0, so each of the tokenizer's 280 tokens is about as likely as any
    # other; with EOS held off (--min-new-tokens), two 8-token samples coincide with odds of ~1e-19.
    path = tmp_path / "flat"
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    tok.save_pretrained(path)
    eot = tok.eos_token_id
    torch.manual_seed(0)
    GPT(tiny_config(vocab_size=tok.vocab_size, initializer_range=0.02, bos_token_id=eot,
                    eos_token_id=eot)).save_pretrained(path)
    n = 2 * WINDOW_BATCHES + 2  # three windows of batches of one prompt
    prompts = write_jsonl(tmp_path / "p.jsonl", [json.dumps("To be")] * n)
    assert main(["--model", str(path), "--prompts-file", prompts, "--batch-size", "1", "--seed", "1",
                 "--temperature", "1", "--max-new-tokens", "8", "--min-new-tokens", "8"]) == 0
    texts = [json.loads(line)["texts"][0] for line in capsys.readouterr().out.splitlines()]
    assert len(texts) == n and len(set(texts)) == n, [(i, t) for i, t in enumerate(texts) if texts.count(t) > 1]
    model = GPT.from_pretrained(path).eval()
    window = generate_texts(model, tok, ["To be"] * WINDOW_BATCHES, batch_size=1, do_sample=True, temperature=1.0,
                            max_new_tokens=8, min_new_tokens=8, seed=1)
    assert texts[:WINDOW_BATCHES] == [one[0] for one in window]


def test_cli_a_prompts_file_that_is_not_utf8_is_told_by_its_line(tiny_checkpoint, tmp_path, capsys,  # noqa: F811
                                                                 monkeypatch):
    """A batch-inference audit: every --prompts-file error names the line but this one, which gave a
    byte offset alone ("byte 0xff at offset 6"). The line is counted as the file's lines are
    (a "\r\n" or lone "\r" ends one too); a block from the middle of a file, whose lines before it
    are unknown, still gives the offset alone."""
    from minigpt.files import not_utf8
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--temperature", "0", "--prompts-file"]
    for data, line, offset in ((b'"a"\n"b\xff"\n', 2, 6), (b'"a"\r\n\r\n"b\xff"\r\n', 3, 9),
                               (b'"a"\r"b"\r"\xff"', 3, 9)):
        (tmp_path / "bad.jsonl").write_bytes(data)
        assert main(base + [str(tmp_path / "bad.jsonl")]) == 2
        assert f"bad.jsonl line {line} is not UTF-8 text: byte 0xff at offset {offset}; convert it" \
            in capsys.readouterr().err
    stdin_of(monkeypatch, b'"a"\n"b\xff"\n')
    assert main(base + ["-"]) == 2
    assert "standard input line 2 is not UTF-8 text: byte 0xff at offset 6" in capsys.readouterr().err
    with pytest.raises(UnicodeDecodeError) as e:
        b"a\nb\xff".decode("utf-8")
    assert str(not_utf8("f.txt", e.value, at=100)).startswith("f.txt is not UTF-8 text: byte 0xff at offset 103;")
    assert str(not_utf8("f.txt", e.value)).startswith("f.txt line 2 is not UTF-8 text: byte 0xff at offset 3;")


@torch.no_grad()
def test_a_prompt_as_long_as_the_context_is_told_one_new_token_fits(model):
    """Mutant R9-39: PromptTooLong left out "(at most 1 for this prompt)" for a prompt of exactly
    n_positions tokens, which 1 new token still fits."""
    letters = "".join(chr(ord("a") + k % 26) for k in range(128))
    with pytest.raises(PromptTooLong, match=r"generate fewer tokens \(at most 1 for this prompt\), or keep"):
        generate_texts(model, DigitsTokenizer(), [letters], max_new_tokens=10)
    assert len(generate_texts(model, DigitsTokenizer(), [letters], max_new_tokens=1)) == 1


def test_text_functions_refuse_a_transformers_model_by_name(model):
    """An audit: transformers' GPT2LMHeadModel failed inside (an AttributeError about the config's
    tokenizer_mismatch or eos_ids); a list of no prompts is no error: no texts."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from minigpt.text_generation import stream_text

    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=16, vocab_size=1000)).eval()
    for call in (generate_texts, generate_text, stream_text):
        with pytest.raises(TypeError, match=r"^minigpt.generate takes a minigpt GPT, got GPT2LMHeadModel"):
            call(hf, DigitsTokenizer(), ["hi"] if call is generate_texts else "hi", max_new_tokens=2)
    assert generate_texts(model, DigitsTokenizer(), []) == []


@torch.no_grad()
def test_a_prompt_longer_than_the_context_is_not_told_to_generate_fewer_tokens(model):
    """An audit: a 129-token prompt on a 128-token context was told "shorten it, generate fewer tokens,
    or ...": no count of new tokens fits a prompt the context cannot hold."""
    letters = "".join(chr(ord("a") + k % 26) for k in range(129))
    for new in (1, 5):
        with pytest.raises(PromptTooLong) as error:
            generate_texts(model, DigitsTokenizer(), ["hi", letters], max_new_tokens=new)
        assert str(error.value) == (f"prompts[1] is 129 tokens, but with max_new_tokens {new} the model's context "
                                    f"n_positions=128 has room for {129 - new}: shorten it, or keep each prompt's last "
                                    "tokens (truncate_left=True)")


def test_text_functions_refuse_another_tokenizer_and_end_at_the_tokenizers_eos():
    """A Python-API audit: (1) GPT-2's tokenizer with the shipped 4,096-token model ran and then
    failed at the decode (or, ids in range, would give text in the wrong vocabulary): the text
    functions now refuse it up front, as the CLIs do. (2) A preset given the tokenizer's vocab_size
    keeps GPT-2's <|endoftext|> id 50256, which it has no row for: its texts now end at the
    tokenizer's <|endoftext|>, as the CLI's do, instead of running on through it."""
    from minigpt import GPT, GPTConfig, Tokenizer
    from minigpt.text_generation import stream_text

    root = Path(__file__).resolve().parent.parent / "checkpoints"
    tok = Tokenizer.from_pretrained(root / "shakespeare")
    shipped = GPT.from_pretrained(root / "shakespeare")
    gpt2_tok = Tokenizer.from_pretrained(root / "gpt2")
    message = r"4096-token vocabulary \(EOS = 4095\), but the tokenizer has 50257 .* pass the model's own tokenizer"
    for call in (lambda: generate_text(shipped, gpt2_tok, "ROMEO:"), lambda: generate_texts(shipped, gpt2_tok, ["ROMEO:"]),
                 lambda: next(stream_text(shipped, gpt2_tok, "ROMEO:"))):
        with pytest.raises(ValueError, match=message):
            call()
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size)).eval()
    assert model.config.has_stale_eos
    with torch.no_grad():  # every position's logits point at <|endoftext|> (4095): logits = ln_f(h) · wte
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.normal_()
        model.transformer.wte.weight[tok.eos_token_id] = 100 * model.transformer.ln_f.bias
    assert generate_text(model, tok, "ROMEO:", max_new_tokens=5) == [""]
    assert generate_texts(model, tok, ["ROMEO:", "JULIET:"], max_new_tokens=5) == [[""], [""]]
    assert list(stream_text(model, tok, "ROMEO:", max_new_tokens=5)) == []
    # An eos_token_id the caller gives still wins.
    assert generate_text(model, tok, "ROMEO:", max_new_tokens=3, eos_token_id=7) == ["<|endoftext|>" * 3]


def test_text_functions_start_an_empty_prompt_of_a_stale_config_at_the_tokenizers_eos(tmp_path):
    """An audit: an older minigpt checkpoint names GPT-2's 50256 as its EOS and BOS, which its
    4,096-token vocabulary lacks. `minigpt generate --prompt ""` warned and began at the tokenizer's
    <|endoftext|>, but the text functions refused "" ("an empty prompt starts from bos_token_id=50256,
    which is no token ..."). They now begin where the CLI does: the texts are those of the same
    weights with a config that names 4095, and the caller's config is left as it was. (The model is
    a seeded gpt2-tiny of the shipped tokenizer's 4,096 ids, not the shipped 4-layer one: faster,
    and its sharp random weights make texts that tell a start token from another.)"""
    from minigpt import GPT, GPTConfig, Tokenizer
    from minigpt.text_generation import stream_text

    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare"
    tok = Tokenizer.from_pretrained(shipped)
    torch.manual_seed(0)
    own_dir, stale = tmp_path / "own", tmp_path / "stale"
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size, bos_token_id=tok.eos_token_id,
                       eos_token_id=tok.eos_token_id, initializer_range=0.4)).save_pretrained(own_dir)
    shutil.copytree(own_dir, stale)
    config = json.loads((stale / "config.json").read_text())
    (stale / "config.json").write_text(json.dumps({**config, "eos_token_id": 50256, "bos_token_id": 50256}))
    old, own = GPT.from_pretrained(stale).eval(), GPT.from_pretrained(own_dir).eval()
    assert old.config.has_stale_eos and own.config.bos_token_id == tok.eos_token_id == 4095
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2), dict(do_sample=True, seed=1, num_return_sequences=2)):
        kw = dict(max_new_tokens=12, **kw)
        texts = generate_text(old, tok, "", **kw)
        assert texts == generate_text(own, tok, "", **kw) and all(texts)
        assert generate_texts(old, tok, ["", "ROMEO:"], batch_size=2, **kw) == \
            generate_texts(own, tok, ["", "ROMEO:"], batch_size=2, **kw)
    assert "".join(stream_text(old, tok, "", max_new_tokens=12)) == generate_text(own, tok, "", max_new_tokens=12)[0]
    assert (old.config.bos_token_id, old.config.eos_token_id) == (50256, 50256)  # the caller's config, untouched
    # explain() from Python too (the CLI replaced the stale ids before calling it; from Python it
    # refused "" and never ended at EOS): its tables are those of the model's own config.
    import io

    from minigpt.explain import explain

    tables = [io.StringIO(), io.StringIO()]
    for model, table in zip((old, own), tables):
        explain(model, tok, "", steps=40, seed=0, out=table)
    assert tables[0].getvalue() == tables[1].getvalue() and "step 0:" in tables[0].getvalue()


def test_a_prompt_holding_a_special_tokens_name_is_told_to_pass_its_ids(tiny_checkpoint):  # noqa: F811
    """A server audit: generate_text(model, tok, "ROMEO:<|endoftext|>") passed on the tokenizer's
    advice, "pass allowed_special={'<|endoftext|>'}", an argument the text functions do not take
    (followed, a TypeError). Its advice now works from them: encode the prompt yourself and pass
    the ids, with the token's position and id kept. A refusal of another kind is the tokenizer's."""
    from minigpt import GPT, Tokenizer
    from minigpt.text_generation import stream_text

    model, tok = GPT.from_pretrained(tiny_checkpoint).eval(), Tokenizer.from_pretrained(tiny_checkpoint)
    prompt, eot = "To <|endoftext|>be", tok.eos_token_id
    message = (r"contains the special token '<\|endoftext\|>' at position 3, which the text functions do not "
               r"encode from text: encode the prompt yourself and pass its ids, tokenizer\.encode\(prompt, "
               rf"allowed_special=\{{'<\|endoftext\|>'\}}\) for it as id {eot} \(or allowed_special='all'\), or "
               r"tokenizer\.encode_ordinary\(prompt\) for it as plain text$")
    for call, name in ((lambda: generate_text(model, tok, prompt), "prompt"), (lambda: stream_text(model, tok, prompt), "prompt"),
                       (lambda: generate_texts(model, tok, ["To be", prompt]), r"prompts\[1\]")):
        with pytest.raises(ValueError, match=f"^{name} {message}"):  # generate_texts names the prompt of its list
            call()
    # The advice, followed: both encodings run, the special token as its id or as plain text.
    as_id, as_text = tok.encode(prompt, allowed_special={"<|endoftext|>"}), tok.encode_ordinary(prompt)
    assert eot in as_id and eot not in as_text
    for ids in (as_id, as_text):
        assert len(generate_text(model, tok, ids, max_new_tokens=3, eos_token_id=[])[0]) > 0

    class Refusing(DigitsTokenizer):
        def encode(self, text: str) -> list[int]:
            raise ValueError("no text today")

    with pytest.raises(ValueError, match="^no text today$"):
        generate_text(model, Refusing(), prompt)


def test_a_line_of_unicode_spaces_is_no_blank_line_of_a_prompts_file(tmp_path):
    """A review: read_prompts skipped a line holding only a no-break space (str.strip takes Unicode
    spaces), where the README's restart recipe (`grep -v '^[[:space:]]*$'`) counts it, so a restart
    ran a prompt twice. Blank is spaces and tabs (or nothing) in both; that line is no JSON."""
    from minigpt.generate_cli import read_prompts

    f = tmp_path / "p.jsonl"
    f.write_text('"a"\n \t\n"b"\n', encoding="utf-8")
    assert read_prompts(str(f)) == ([{"prompt": "a"}, {"prompt": "b"}], [1, 3])
    f.write_text('"a"\n\u00a0\n"b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_prompts(str(f))



def test_a_stream_closed_partway_leaves_the_model_as_it_was(model):
    """What README promises a chat app that stops a stream early (leave the loop, or close()), which
    an audit found true and this pins: a stream closed after two pieces leaves the model in eval
    mode, grad mode on and the caller's random state untouched, and the same seed then gives the
    text a fresh run gives."""
    from minigpt.text_generation import stream_text

    tok = DigitsTokenizer()
    settings = dict(max_new_tokens=12, do_sample=True, temperature=1.5, seed=3, eos_token_id=[])
    whole = "".join(stream_text(model, tok, "hi", **settings))
    state = torch.random.get_rng_state()
    for _ in range(3):
        pieces = stream_text(model, tok, "hi", **settings)
        next(pieces), next(pieces)
        pieces.close()
    assert not model.training and torch.is_grad_enabled() and torch.equal(torch.random.get_rng_state(), state)
    assert "".join(stream_text(model, tok, "hi", **settings)) == whole
