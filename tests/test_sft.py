"""The sft task (`minigpt finetune --task sft`): prompt/completion pairs, the loss on the completions
alone, every val example scored; errors name file:line; runs resume bit for bit and save a plain GPT-2."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig, Tokenizer
from minigpt.finetune_config import FinetuneConfig
from minigpt.model import IGNORE_INDEX
from minigpt.sft_data import SftExamples, encode_pairs, read_pairs, sft_batch, sft_val_loss
from conftest import save_tiny_base

CFG = GPTConfig.gpt2("gpt2-tiny", vocab_size=64, n_layer=2, bos_token_id=0, eos_token_id=0)
PAD = 63
# Two examples as ids: prompt [5, 6, 7] + completion [8, 9] + EOS 0, and prompt [10] + completion [11] + EOS.
EXAMPLES = SftExamples(rows=[[5, 6, 7, 8, 9, 0], [10, 11, 0]], prompt_lens=[3, 1], cut=0, dropped=0, longest=6)


def _tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


# ---- the data: JSON Lines, each pair's ids, batches --------------------------------------------


def test_read_pairs_skips_a_bom_and_blank_lines_and_ignores_other_fields(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('\ufeff{"prompt": "Q: 1+1=", "completion": " 2", "id": 7}\n\n  \n{"completion": "b", "prompt": "a"}\n',
                 encoding="utf-8")
    assert read_pairs(f) == (["Q: 1+1=", "a"], [" 2", "b"])


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "a", "completion": "b"', "not JSON (Expecting ',' delimiter at column 34)"),
    ('["a", "b"]', "a JSON list, not an object"),
    ('{"prompt": "a"}', "field 'completion' is missing; it must be a string (the line's fields: 'prompt')"),
    ('{"prompt": 3, "completion": "b"}', "field 'prompt' is int 3; it must be a string"),
    ('{"instruction": "a", "output": "b"}', "field 'prompt' is missing; it must be a string (the line's fields: "
                                            "'instruction', 'output')"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    """No line is silently dropped: a user with Alpaca's field names learns which the file must use."""
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"prompt": "ok", "completion": "fine"}\n\n' + line + "\n")
    with pytest.raises(ValueError) as e:
        read_pairs(f)
    assert str(e.value).startswith(f"{f}:3: {message}")


def test_an_empty_file_or_a_directory_is_refused_by_name(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl holds no examples"):
        read_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match=f"sft data {tmp_path} is a directory"):
        read_pairs(tmp_path)


def test_prompt_and_completion_are_tokenized_apart_then_joined_with_eos():
    """The boundary is exact: tokenized as one text, "hello " + "world" is "hello" + " world",
    whose second token straddles the join, and no position would be the prompt's end."""
    tok = Tokenizer.train("hello world " * 20, 267)
    joined, prompt, completion = tok.encode("hello world"), tok.encode("hello "), tok.encode("world")
    assert joined != prompt + completion  # the straddling token that tokenizing apart avoids
    encoded = encode_pairs(tok, (["hello ", "x<|endoftext|>"], ["world", ""]), block_size=16)
    assert encoded.rows[0] == prompt + completion + [tok.eos_token_id] and encoded.prompt_lens[0] == len(prompt)
    # "<|endoftext|>" written in a prompt is its characters, not the token: only the appended EOS is one.
    assert encoded.rows[1].count(tok.eos_token_id) == 1 and encoded.rows[1][-1] == tok.eos_token_id


def test_a_long_example_is_cut_and_a_prompt_filling_the_block_is_dropped():
    """A row keeps block_size + 1 ids (block_size inputs, each with the next as target); a prompt
    that fills them leaves no completion target, so it is dropped and counted: in a batch of only
    such rows the mean loss would be 0/0, a NaN the training loop stops on. A dropped one is not
    counted as cut too, nor as the longest kept (reviews: one long prompt was said as kept cut and
    as dropped)."""
    tok = Tokenizer.train("abcdefgh", 257)  # no merge: a token a character, EOS the 257th
    pairs = (["a", "abcde", "abcdefgh"], ["b", "fgh", "x"])  # rows of 1 + 1, 5 + 3 and 8 + 1 ids, each + EOS
    encoded = encode_pairs(tok, pairs, block_size=6)
    assert encoded.cut == 1 and encoded.dropped == 1 and encoded.longest == 9  # the kept one's: the dropped one had 10
    assert encoded.rows == [tok.encode("ab") + [tok.eos_token_id], tok.encode("abcdefg")]  # the second lost "h" and EOS
    assert encoded.prompt_lens == [1, 5]


def test_an_empty_prompt_is_the_eos_generation_starts_from_so_every_completion_token_is_a_target():
    """An audit: an empty prompt's row began at its completion's first token, which no position
    predicts, so that token was never a target, while generation starts an empty prompt from
    <|endoftext|>: the tuned model, given it, ended at once. The prompt is [EOS] now, as generation
    reads it; an empty completion too keeps one target, its EOS, and is not dropped (it was said as
    "dropped, whose prompt fills the block" with a prompt of 0 tokens)."""
    tok = Tokenizer.train("abcdefgh", 257)  # no merge: a token a character, EOS the 257th
    eos = tok.eos_token_id
    encoded = encode_pairs(tok, (["", "", "a"], ["bc", "", "b"]), block_size=2)
    assert encoded.rows == [[eos, *tok.encode("bc"), eos][:3], [eos, eos], [*tok.encode("ab"), eos]]
    assert encoded.prompt_lens == [1, 1, 1] and encoded.dropped == 0 and encoded.cut == 1
    x, y = sft_batch(encoded, [0, 1], PAD)
    assert x.tolist() == [[eos, *tok.encode("b")], [eos, PAD]]
    assert y.tolist() == [tok.encode("bc"), [eos, IGNORE_INDEX]]  # "b" after EOS is a target; the empty pair's EOS is


def test_a_batch_targets_the_completion_tokens_alone():
    x, y = sft_batch(EXAMPLES, [0, 1], PAD)
    assert x.tolist() == [[5, 6, 7, 8, 9], [10, 11, PAD, PAD, PAD]]
    I = IGNORE_INDEX  # noqa: E741
    # y[t] is the token after x[t]: the completion's 8, 9 and EOS; the prompt's 6 and 7 and the pads are skipped.
    assert y.tolist() == [[I, I, 8, 9, 0], [11, 0, I, I, I]]


# ---- the loss ----------------------------------------------------------------------------------


def test_the_loss_is_the_mean_over_completion_tokens_and_prompts_and_pads_add_nothing():
    """By hand: cross-entropy at the 5 completion positions (3 of the first example, 2 of the
    second), averaged over those 5; the prompt's and the pads' logits get no gradient at all."""
    model = _tiny_gpt()
    x, y = sft_batch(EXAMPLES, [0, 1], PAD)
    logits, loss = model(x, y)
    logp = logits.float().log_softmax(-1)
    picked = [(0, 2, 8), (0, 3, 9), (0, 4, 0), (1, 0, 11), (1, 1, 0)]  # (row, position, target)
    by_hand = -sum(logp[b, t, target] for b, t, target in picked) / len(picked)
    print(f"sft loss {loss.item():.6f}, by hand {by_hand.item():.6f}")
    torch.testing.assert_close(loss, by_hand)
    # What the prompt and pad positions would predict does not reach the loss: their logits' gradient is 0.
    logits = logits.detach().requires_grad_()
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX).backward()
    counted = torch.zeros_like(y, dtype=torch.bool)
    counted[[b for b, _, _ in picked], [t for _, t, _ in picked]] = True
    assert logits.grad[~counted].abs().max() == 0 and (logits.grad[counted].abs().amax(-1) > 0).all()
    # A completion's target does change it: the first example's EOS swapped for another token.
    other = SftExamples([[5, 6, 7, 8, 9, 1], [10, 11, 0]], [3, 1], 0, 0, 6)
    assert model(*sft_batch(other, [0, 1], PAD))[1] != loss
    # And so does where the prompt ends: with the first example's prompt one token shorter, 8 is a target too.
    longer = SftExamples(EXAMPLES.rows, [2, 1], 0, 0, 6)
    assert model(*sft_batch(longer, [0, 1], PAD))[1] != loss


def test_the_chunked_loss_skips_the_same_positions():
    """--chunked-loss is allowed for sft: its loss skips IGNORE_INDEX as the plain one does."""
    model = _tiny_gpt()
    batch = sft_batch(EXAMPLES, [0, 1, 1], PAD)
    plain = model(*batch)[1]
    model.chunked_loss = True
    torch.testing.assert_close(model(*batch)[1], plain)


def test_the_val_loss_is_over_every_completion_token_whatever_the_batches():
    """Each batch's mean is weighed by its completion tokens: one example at a time, or all at
    once, every token counts once (a plain mean of batch means would weigh the short example's
    2 tokens as much as the long one's 3)."""
    model = _tiny_gpt()
    whole = model(*sft_batch(EXAMPLES, [0, 1], PAD))[1].item()
    for batch_size in (1, 2, 8):
        assert sft_val_loss(model, EXAMPLES, PAD, batch_size) == pytest.approx(whole, rel=1e-6)
    model.train()
    sft_val_loss(model, EXAMPLES, PAD, 1)
    assert model.training, "the mode it found is given back"


# ---- `minigpt finetune --task sft` end to end --------------------------------------------------

FRUIT = {"red": "apple", "yellow": "banana", "green": "lime", "purple": "grape"}
CORPUS = "".join(f"the fruit that is {c} is the {f}.\n" for c, f in FRUIT.items()) * 20


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base model with a tokenizer trained on CORPUS, and pairs.jsonl: each color's fruit."""
    root = save_tiny_base(tmp_path_factory.mktemp("sft"), CORPUS, 300)
    lines = [json.dumps({"prompt": f"{c}:", "completion": f" {f}"}) for c, f in FRUIT.items()]
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _run(base, out, *extra):
    from minigpt.finetune import main

    data = () if "--data" in extra else ("--data", str(base / "pairs.jsonl"), "--val-data", str(base / "pairs.jsonl"))
    return main(["--init", str(base / "base"), "--out", str(out), "--task", "sft", *data, "--max-iters", "4",
                 "--eval-interval", "2", "--batch-size", "4", "--block-size", "32", "--warmup-iters", "1", *extra])


def test_a_short_run_learns_the_completions_and_generate_writes_them(base, tmp_path, capsys):
    from minigpt.classify_data import batch_pad_id
    from minigpt.sft_data import load_pairs
    from minigpt.text_generation import generate_text

    # Batches of 16 of the 4 examples: with 4 a batch, the val loss after 60 steps ranged over 0.07-0.58
    # with --seed 0-3, and a color now and then got another's fruit; with 16, over 0.013-0.027.
    assert _run(base, tmp_path / "o", "--strategy", "full", "--max-iters", "60", "--eval-interval", "30", "--lr", "5e-3",
                "--batch-size", "16", "--dropout", "0") == 0
    assert f"sft: 4 train / 4 val examples (from --val-data {base / 'pairs.jsonl'})" in capsys.readouterr().err
    tok = Tokenizer.from_pretrained(base / "base")
    cfg = FinetuneConfig(init="x", task="sft", data=str(base / "pairs.jsonl"), val_data=str(base / "pairs.jsonl"))
    val = encode_pairs(tok, load_pairs(cfg)["val"], 32)
    before = sft_val_loss(GPT.from_pretrained(base / "base"), val, batch_pad_id(tok), 4)
    after = json.loads((tmp_path / "o" / "finetune_summary.json").read_text())
    print(f"val loss {before:.3f} before, {after['val_loss']:.4f} after")  # measured 5.8 → 0.014
    assert after["val_loss"] < 0.1 * before and after["val_ppl"] == pytest.approx(torch.tensor(after["val_loss"]).exp().item())
    model = GPT.from_pretrained(tmp_path / "o").eval()
    for color, fruit in FRUIT.items():  # greedy, and it stops: the EOS after each completion was learnt
        assert generate_text(model, tok, f"{color}:", max_new_tokens=8) == [f" {fruit}"]


def test_a_lora_run_saves_a_merged_gpt2_that_transformers_opens_and_its_adapters(base, tmp_path):
    from transformers import GPT2LMHeadModel

    assert _run(base, tmp_path / "o", "--strategy", "lora", "--lr", "1e-2") == 0
    ours = GPT.from_pretrained(tmp_path / "o").eval()
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "o").eval()
    idx = torch.randint(0, ours.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(idx)[0] - hf(idx).logits).abs().max().item()
    print(f"sft LoRA model: max |minigpt - transformers| = {diff:.2e}")
    assert diff < 2e-6
    assert (tmp_path / "o" / "adapter" / "adapter_config.json").is_file()  # the adapters alone too, as lm's
    summary = json.loads((tmp_path / "o" / "finetune_summary.json").read_text())
    assert summary["task"] == "sft" and summary["steps"] == 4 and "val_loss" in summary


@pytest.mark.parametrize("strategy", ["lora", "partial"])
def test_a_resumed_run_ends_where_an_unbroken_one_does_bit_for_bit(base, tmp_path, strategy):
    args = ("--strategy", strategy, "--lr-decay-iters", "4", "--log-interval", "2")
    assert _run(base, tmp_path / "straight", *args) == 0
    assert _run(base, tmp_path / "resumed", *args, "--max-iters", "2") == 0
    assert _run(base, tmp_path / "resumed", *args, "--resume") == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_resume_with_another_batch_size_keeps_the_best_val_loss(base, tmp_path, capsys):
    """The sft val loss is over every val example, as classify's: another --batch-size or --seed
    does not measure it otherwise, so best/ is kept (resume.val_settings treated sft as lm and
    started best/ over with a "measured otherwise" note)."""
    assert _run(base, tmp_path / "o", "--max-iters", "2") == 0
    capsys.readouterr()
    assert _run(base, tmp_path / "o", "--resume", "--batch-size", "2", "--seed", "7") == 0
    out = capsys.readouterr().err
    assert "resuming the run" in out and "measured otherwise" not in out


@pytest.mark.parametrize("content,message", [
    ("\n" + json.dumps([{"instruction": "a", "input": "", "output": "b"}], indent=4),  # (a blank first line too)
     r"is a JSON array, not JSON Lines \(a JSON object a line\): if they are Alpaca's \(instruction, input, output\), "
     r"`jq -c '\.\[\] \| \{prompt: "),
    (json.dumps({"instruction": "a", "input": "", "output": "b"}),
     r"if they are Alpaca's \(instruction, input, output\), `jq -c '\. \| \{prompt: .*' \S+data.json > \S+data_pairs.jsonl`"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), r'a chat \("messages"\) file, which sft does not read'),
])
def test_other_instruction_formats_are_named_with_how_to_convert(tmp_path, content, message):
    """A review: Alpaca's own file (a pretty-printed JSON array) was "not JSON at column 2", and its
    records, or a chat file's, only listed their fields. Each format is named, with the jq line."""
    f = tmp_path / "data.json"
    f.write_text(content + "\n")
    with pytest.raises(ValueError, match=message):
        read_pairs(f)


def test_minigpt_eval_scores_pairs_as_the_sft_val_loss(base, tmp_path, capsys):
    """A review: `minigpt eval MODEL pairs.jsonl` (the command a finished sft run suggests) scored
    the file as text, braces and keys included: a perplexity of 760,938 beside a val loss of 0.011.
    It is the sft val loss now, the mean over the completions' tokens."""
    from minigpt.evaluate import main
    from minigpt.sft_data import encode_pairs, read_pairs, sft_val_loss

    assert main([str(base / "base"), str(base / "pairs.jsonl"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tok = GPT.from_pretrained(base / "base").eval(), Tokenizer.from_pretrained(base / "base")
    examples = encode_pairs(tok, read_pairs(base / "pairs.jsonl"), model.config.n_positions)
    assert record["completion_loss"] == pytest.approx(sft_val_loss(model, examples, 0, 32), rel=1e-6)
    assert record["pairs"] == len(FRUIT) and "perplexity" not in record
    assert main([str(base / "base"), str(base / "pairs.jsonl"), "--stride", "4"]) == 2
    assert "holds prompt/completion pairs, each scored whole" in capsys.readouterr().err
    # A fourth review: --batch-size 0 ran at the default, -1 gave a NaN; pairs on stdin were scored as text.
    assert main([str(base / "base"), str(base / "pairs.jsonl"), "--batch-size", "0"]) == 2
    assert "--batch-size must be ≥ 1, got 0" in capsys.readouterr().err


def test_minigpt_eval_refuses_pairs_on_standard_input_and_says_the_pairs_it_cuts(base, tmp_path, capsys, monkeypatch):
    """A fourth review: pairs piped to `minigpt eval MODEL -` were scored as text without a word,
    and pairs longer than the context were cut unsaid."""
    import io
    import sys

    from minigpt.evaluate import main

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((base / "pairs.jsonl").read_bytes())))
    assert main([str(base / "base"), "-"]) == 2
    assert "standard input holds prompt/completion pairs" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "red: " * 200, "completion": " apple"}) + "\n"
                    + (base / "pairs.jsonl").read_text())
    assert main([str(base / "base"), str(long), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "of 4 pairs are longer than the context" not in err  # the long prompt fills it: dropped, not cut
    assert json.loads(out.strip().splitlines()[-1])["dropped"] == 1
    long.write_text(json.dumps({"prompt": "red:", "completion": " apple" * 300}) + "\n")
    assert main([str(base / "base"), str(long), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "1 of 1 pairs are longer than the context (" in err and json.loads(out.strip().splitlines()[-1])["cut"] == 1


def test_minigpt_eval_names_a_mistyped_pair_and_refuses_json_it_would_score_as_text(base, tmp_path, capsys, monkeypatch):
    """An eval audit: a pairs file whose first record said "response" for "completion" was scored
    as text (a perplexity of its braces and keys, exit 0), and so was any other JSON Lines file.
    A record with either field is a pair, whose missing field is named; other JSON is refused,
    with the pipe that scores it as text; the lm task's --data tells such a file to use sft too."""
    from minigpt.evaluate import main

    typo = tmp_path / "typo.jsonl"
    typo.write_text(json.dumps({"prompt": "red:", "response": " apple"}) + "\n" + (base / "pairs.jsonl").read_text())
    assert main([str(base / "base"), str(typo)]) == 2
    assert f"{typo}:1: field 'completion' is missing" in capsys.readouterr().err
    for name in ("texts.jsonl", "texts.txt"):  # by its suffix, or by its lines
        texts = tmp_path / name
        texts.write_text("".join(json.dumps({"text": f"{c} is {f}"}) + "\n" for c, f in FRUIT.items()))
        assert main([str(base / "base"), str(texts)]) == 2
        err = capsys.readouterr().err
        assert "but not prompt/completion pairs" in err and f"pipe it: `minigpt eval {base / 'base'} - < {texts}`" in err
    assert _run(base, tmp_path / "o", "--task", "lm", "--data", str(typo), "--max-iters", "1") == 2
    assert "holds prompt/completion pairs (JSON Lines)" in capsys.readouterr().err
    # A review: Alpaca's records (or an array) get read_pairs' jq line, not the advice to score them as
    # text; a file that is no UTF-8 is said as such; a text piped in whose first line has a prompt alone
    # is scored as text (standard input refuses whole pairs only).
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(json.dumps({"instruction": "red?", "input": "", "output": " apple"}) + "\n")
    assert main([str(base / "base"), str(alpaca)]) == 2
    assert "jq -c" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 au lait\n")
    assert main([str(base / "base"), str(latin1)]) == 2
    assert "is not UTF-8 text: byte 0xe9 at offset 3" in capsys.readouterr().err
    import io
    import sys

    mixed = json.dumps({"prompt": "red is"}) + "\nred is apple. green is pear.\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(mixed.encode())))
    assert main([str(base / "base"), "-"]) == 0


def test_an_sft_run_records_the_positions_its_examples_reach_not_its_block_size(base, tmp_path):
    """An eval audit: sft from a model pretrained on 8-token windows (its record) saved the run's
    --block-size (32) as model_max_length, though no example reached past 6 tokens: `minigpt eval`
    then scored 32-token windows, positions 8-31 untrained, without its note. The record is what
    the --init learned, or the longest example's inputs where they reach further."""
    init = tmp_path / "short"
    shutil.copytree(base / "base", init)
    config = json.loads((init / "tokenizer_config.json").read_text())
    (init / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8}))
    assert _run(base, tmp_path / "o", "--init", str(init)) == 0
    assert Tokenizer.from_pretrained(tmp_path / "o").model_max_length == 8
    long = tmp_path / "long.jsonl"  # an example longer than 8 tokens
    long.write_text(json.dumps({"prompt": "red: " * 6, "completion": " apple"}) + "\n" + (base / "pairs.jsonl").read_text())
    assert _run(base, tmp_path / "o2", "--init", str(init), "--data", str(long), "--val-data", str(long)) == 0
    from minigpt.sft_data import encode_pairs, read_pairs

    inputs = encode_pairs(Tokenizer.from_pretrained(init), read_pairs(long), 32).longest - 1
    assert inputs > 8 and Tokenizer.from_pretrained(tmp_path / "o2").model_max_length == inputs


def test_prompts_ending_in_a_space_are_noted(base, tmp_path, capsys):
    """A review: "Answer: " + "Paris" trains a lone " " token before a word without its space, pairs
    of tokens GPT-2 never wrote, and prompting with the space then goes astray. Said at the start."""
    pairs = tmp_path / "spaced.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{c}: ", "completion": f}) + "\n" for c, f in FRUIT.items()))
    assert _run(base, tmp_path / "o", "--data", str(pairs), "--val-data", str(pairs), "--max-iters", "1") == 0
    assert "sft: note: 4 train prompts end in a space" in capsys.readouterr().err


def test_resume_refuses_other_pairs(base, tmp_path, capsys):
    assert _run(base, tmp_path / "o", "--max-iters", "2") == 0
    other = tmp_path / "other.jsonl"
    other.write_text('{"prompt": "blue:", "completion": " plum"}\n' + (base / "pairs.jsonl").read_text())
    capsys.readouterr()
    assert _run(base, tmp_path / "o", "--data", str(other), "--val-data", str(base / "pairs.jsonl"), "--resume") == 2
    assert "train examples: 4 then, 5 now" in capsys.readouterr().err


def test_held_out_pairs_and_said_cuts_and_drops(base, tmp_path, capsys):
    pairs = tmp_path / "many.jsonl"
    rows = [{"prompt": f"{c}:", "completion": f" {f}"} for c, f in FRUIT.items()] * 5
    rows.append({"prompt": "red " * 40, "completion": " apple"})  # fills the block: dropped
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run(base, tmp_path / "o", "--data", str(pairs), "--val-fraction", "0.25", "--max-iters", "1") == 0
    out = capsys.readouterr().err
    assert f"sft: 16 train / 5 val examples (held out of {pairs} by --val-fraction 0.25)" in out or \
           f"sft: 15 train / 5 val examples (held out of {pairs} by --val-fraction 0.25)" in out
    assert "whose prompt fills --block-size 32: no completion token is left to learn from" in out
    assert "longer than --block-size + 1" not in out  # the long one is dropped, not said as cut and kept too


@pytest.mark.parametrize("extra,message", [
    (("--strategy", "frozen"), "'frozen' trains only a new head, and the lm task has none, nor has sft"),
    (("--pooling", "last"), "pooling='last' (--pooling) applies to task 'classify' only; task 'sft' would ignore it"),
    (("--max-examples", "2"), "max_examples=2 (--max-examples) applies to task 'classify' only"),
    (("--eval-iters", "3"), "task 'sft' scores every val example at each evaluation, so it would ignore it"),
    (("--val-fraction", "0.3"), "validation comes from"),
    (("--block-size", "1", "--max-iters", "1"), "every train example's prompt fills --block-size 1 tokens"),
])
def test_bad_input_is_a_clear_error(base, tmp_path, capsys, extra, message):
    assert _run(base, tmp_path / "o", *extra) == 2
    assert message in capsys.readouterr().err


def test_several_data_files_and_a_bad_line_are_refused_by_name(base, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--data \(data= in Python\) names 2 paths, but task 'sft' reads one JSON Lines file"):
        FinetuneConfig(init="x", task="sft", data=[str(base / "pairs.jsonl")] * 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\nred: apple\n')
    assert _run(base, tmp_path / "o", "--data", str(bad), "--max-iters", "1") == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    FinetuneConfig(init="x", task="sft", data="d", val_data="v", chunked_loss=True)  # both are sft's options too


def test_pairs_given_to_the_lm_task_are_told_to_use_sft(base, tmp_path, capsys):
    """Left at its default task, a pairs file met prepare's JSON refusal, whose advice (extract the
    text with jq) is for text in JSON, not for prompt/completion pairs."""
    assert _run(base, tmp_path / "o", "--task", "lm", "--data", str(base / "pairs.jsonl"), "--eval-iters", "2") == 2
    assert "holds prompt/completion pairs (JSON Lines), which the lm task would read as text" in capsys.readouterr().err


def test_an_empty_prompt_is_learnt_as_generation_then_starts_it_and_minigpt_eval_scores_it(base, tmp_path, capsys):
    """An audit: a pair with an empty prompt trained without the <|endoftext|> generation starts
    from, so `generate --prompt ""` on the tuned model printed nothing; and `minigpt eval` said an
    empty pair "dropped, their prompt filling the block". Now generation writes the completion, and
    eval scores every pair, the empty one's EOS too, with the training's own encoding."""
    from minigpt.evaluate import main as eval_main
    from minigpt.text_generation import generate_text

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"{c}:", "completion": f" {f}"} for c, f in FRUIT.items()] + [{"prompt": "", "completion": " lime"}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _run(base, tmp_path / "o", "--strategy", "full", "--max-iters", "60", "--eval-interval", "30", "--lr", "5e-3",
                "--batch-size", "16", "--dropout", "0", "--data", str(pairs), "--val-data", str(pairs)) == 0
    assert "sft: dropped" not in capsys.readouterr().err
    tok = Tokenizer.from_pretrained(tmp_path / "o")
    assert generate_text(GPT.from_pretrained(tmp_path / "o").eval(), tok, "", max_new_tokens=8) == [" lime"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": "red:", "completion": " apple"}) + "\n" + json.dumps({"prompt": "", "completion": ""}))
    assert eval_main([str(tmp_path / "o"), str(empty), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["pairs"] == 2 and record["dropped"] == 0
    assert record["tokens"] == len(tok.encode(" apple")) + 2  # the completion and its EOS, and the empty pair's EOS


def test_val_pairs_that_are_also_train_pairs_are_counted_and_said(base, tmp_path, capsys):
    """An audit: --val-fraction held out exact copies of train pairs (4 of 19 in its file), whose
    val loss is memory, not generalization, and nothing said so. They are counted (the same prompt
    and completion; neither alone) and said on the `sft:` line, not removed."""
    from minigpt.sft_data import val_in_train

    split = {"train": (["a", "b", "c"], ["1", "2", "3"]), "val": (["a", "b", "a", "d"], ["1", "9", "1", "4"])}
    assert val_in_train(split) == 2  # ("a", "1") twice; ("b", "9") shares a prompt only
    assert _run(base, tmp_path / "o", "--max-iters", "1") == 0  # --val-data is --data here
    assert "val examples (from --val-data " + str(base / "pairs.jsonl") + "); 4 of 4 val pairs are also train pairs: " \
           "their loss is not held out" in capsys.readouterr().err
    many = tmp_path / "many.jsonl"  # each pair 5 times: a --val-fraction split holds copies of train pairs
    many.write_text("".join(json.dumps({"prompt": f"{c}:", "completion": f" {f}"}) + "\n" for c, f in FRUIT.items()) * 5)
    assert _run(base, tmp_path / "o2", "--data", str(many), "--val-fraction", "0.25", "--max-iters", "1") == 0
    cfg = FinetuneConfig(init="x", task="sft", data=str(many), val_fraction=0.25)
    from minigpt.sft_data import load_pairs
    shared = val_in_train(load_pairs(cfg))
    assert shared > 0 and f"; {shared} of 5 val pairs are also train pairs" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "red:", "completion": " cherry"}) + "\n")  # a prompt shared, not the pair
    assert _run(base, tmp_path / "o3", "--val-data", str(other), "--max-iters", "1",
                "--data", str(base / "pairs.jsonl")) == 0
    assert "also train pairs" not in capsys.readouterr().err


def _as_saved_before_the_encoding_was_recorded(out):
    """Rewrite out's training state as a minigpt before `reading_record` saved it: the pairs'
    fingerprint alone, which (`restore` reads) means encoding 1."""
    path = out / "training_state.pt"
    state = torch.load(path, weights_only=True)
    assert state["data"]["sft encoding"] == 2  # what this minigpt records
    state["data"] = {k: v for k, v in state["data"].items() if k not in ("sft encoding", "val empty prompts")}
    torch.save(state, path)


def _best_resets(out):
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r.get("best_reset")]


def test_a_run_saved_before_empty_prompts_were_eos_starts_best_over_on_resume(base, tmp_path, capsys):
    """A review: a run saved before an empty prompt encoded as <|endoftext|> (its val pairs with an
    empty prompt scored one token fewer) resumed silently, comparing the new val losses with the
    old best, so a better model could lose to a figure measured otherwise. Now the encoding is
    recorded, and a resume across it starts best/ over (a best_reset record) and says why; once
    the new state records it, a later resume keeps best/."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"{c}:", "completion": f" {f}"} for c, f in FRUIT.items()] + [{"prompt": "", "completion": " lime"}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ("--data", str(pairs), "--val-data", str(pairs))
    assert _run(base, tmp_path / "o", *data) == 0
    _as_saved_before_the_encoding_was_recorded(tmp_path / "o")
    capsys.readouterr()
    assert _run(base, tmp_path / "o", *data, "--resume", "--max-iters", "6") == 0
    out = capsys.readouterr().err
    note = next(line for line in out.splitlines() if "sft encoding" in line)
    assert note.startswith("note: val loss is measured otherwise than the run's (sft encoding 1 → 2: val pairs with an "
                           "empty prompt (1) read it as <|endoftext|> now, their completion's first token a target), so "
                           "its best val loss (") and note.endswith("best/ follows this val loss from here")
    assert _best_resets(tmp_path / "o") == [{"step": 4, "best_reset": True}]
    assert torch.load(tmp_path / "o" / "training_state.pt", weights_only=True)["data"]["sft encoding"] == 2
    assert _run(base, tmp_path / "o", *data, "--resume", "--max-iters", "8") == 0  # recorded now: nothing changed
    assert "sft encoding" not in capsys.readouterr().err and len(_best_resets(tmp_path / "o")) == 1


def test_a_run_saved_before_the_encoding_without_empty_val_prompts_resumes_as_it_was(base, tmp_path, capsys):
    """The other side of the review's fix: without an empty val prompt both encodings make the same
    val rows, so a run saved before the encoding was recorded keeps its best/, with no word."""
    assert _run(base, tmp_path / "o") == 0
    _as_saved_before_the_encoding_was_recorded(tmp_path / "o")
    capsys.readouterr()
    assert _run(base, tmp_path / "o", "--resume", "--max-iters", "6") == 0
    out = capsys.readouterr().err
    assert "resuming the run" in out and "sft encoding" not in out and "measured otherwise" not in out
    assert _best_resets(tmp_path / "o") == []
