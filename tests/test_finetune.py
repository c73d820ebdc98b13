"""Fine-tuning strategies: exactly the chosen weights train, every strategy learns, bad input fails loudly."""
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minigpt import GPT, GPTConfig, Tokenizer
from minigpt.classifier import GPTClassifier
from minigpt.classify_data import load_classification_data, read_tsv, score_examples
from minigpt.finetune import apply_strategy, best_evaluations, trainable_parameters
from minigpt.finetune_config import STRATEGIES, VAL_FRACTION_DEFAULT, FinetuneConfig
from minigpt.lora import LoRALinear
from conftest import save_tiny_base
from test_train import one_error, torchrun

CFG = GPTConfig.gpt2("gpt2-tiny", vocab_size=64, n_layer=3, bos_token_id=0, eos_token_id=0)
LM_STRATEGIES = [s for s in STRATEGIES if s != "frozen"]
GPT2_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "gpt2"


def _lm(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG)


def _clf(seed: int = 0, hidden: tuple[int, ...] = ()) -> GPTClassifier:
    torch.manual_seed(seed)
    return GPTClassifier(GPT(CFG), 2, hidden=hidden)


def _lm_batch():
    """A toy LM task: counting up modulo 64, which a few steps of any strategy start to learn."""
    start = torch.randint(0, CFG.vocab_size, (8, 1))
    seq = (start + torch.arange(17)) % CFG.vocab_size  # (8, 17)
    return seq[:, :-1], seq[:, 1:]


def _clf_batch():
    """A toy classification task: is the last token in the upper half of the vocabulary?"""
    idx = torch.randint(1, CFG.vocab_size, (16, 6))
    return idx, torch.ones_like(idx), (idx[:, -1] >= CFG.vocab_size // 2).long()


def _loss(model, batch):
    return model(*batch[:-1], batch[-1])[1] if isinstance(model, GPTClassifier) else model(*batch)[1]


def _train(model, batch, steps: int = 5, lr: float = 1e-2):
    opt = torch.optim.AdamW(trainable_parameters(model), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        _loss(model, batch).backward()
        opt.step()
    return opt


def test_frozen_blocks_keep_their_dropout_while_the_head_trains():
    """What README says of `frozen` (a finetuner audit found it undocumented): frozen is not eval
    mode. The frozen blocks run with the model's dropout in training, so the head's features vary
    from call to call; with dropout 0 they do not."""
    for rate, varies in ((0.3, True), (0.0, False)):
        torch.manual_seed(0)
        clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, bos_token_id=0, eos_token_id=0, dropout=rate)), 2)
        apply_strategy(clf, "frozen")
        clf.train()
        idx = torch.randint(1, 64, (4, 6))
        with torch.no_grad():
            first, second = clf(idx)[0], clf(idx)[0]
        assert (not torch.equal(first, second)) == varies


@pytest.mark.parametrize("task,strategy", [("lm", s) for s in LM_STRATEGIES] + [("classify", s) for s in STRATEGIES]
                         + [("classify-mlp", s) for s in STRATEGIES])
def test_frozen_parameters_stay_bitwise_and_trainable_ones_move(task, strategy):
    """classify-mlp: a head with a hidden layer (--head-hidden), whose score is an nn.Sequential
    (apply_strategy read `score.weight` and crashed on it)."""
    model = _lm() if task == "lm" else _clf(hidden=(16,) if task == "classify-mlp" else ())
    summary = apply_strategy(model, strategy, n_trainable_blocks=1, verbose=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert summary.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable) > 0
    assert summary.optimizer_bytes == 8 * summary.trainable
    torch.manual_seed(1)
    opt = _train(model, _lm_batch() if task == "lm" else _clf_batch(), steps=3)

    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if n in trainable}, "optimizer holds only trainable params"
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(p, before[name]), f"{name} should be frozen"


def test_what_each_strategy_trains():
    model = _lm()
    apply_strategy(model, "partial", n_trainable_blocks=2, verbose=False)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("transformer.h.1.", "transformer.h.2.", "transformer.ln_f."))}
    model = _lm()
    apply_strategy(model, "partial", n_trainable_blocks=0, train_embeddings=True, verbose=False)
    assert model.lm_head.weight.requires_grad and model.transformer.wte.weight is model.lm_head.weight
    assert not model.transformer.wpe.weight.requires_grad and not model.transformer.h[2].ln_1.weight.requires_grad
    clf = _clf()
    s = apply_strategy(clf, "frozen", verbose=False)
    assert s.trainable == clf.score.weight.numel() == 2 * CFG.n_embd
    clf = _clf()
    s = apply_strategy(clf, "lora", lora_rank=2, lora_targets=("c_attn",), verbose=False)
    lora = [m for m in clf.modules() if isinstance(m, LoRALinear)]
    assert len(lora) == CFG.n_layer and all(not m.base.weight.requires_grad for m in lora)
    assert s.trainable == CFG.n_layer * 2 * (CFG.n_embd + 3 * CFG.n_embd) + 2 * CFG.n_embd


def test_partial_may_train_every_block():
    """Mutant R8-2: `n_trainable_blocks < n_layer` for `<= n_layer` refused "partial" with every block
    trainable, the documented upper end of [0, n_layer]: all blocks and ln_f train, the embeddings not."""
    model = _lm()
    apply_strategy(model, "partial", n_trainable_blocks=CFG.n_layer, verbose=False)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("transformer.h.", "transformer.ln_f."))}


def test_summary_is_printed(capsys):
    apply_strategy(_lm(), "full")
    err = capsys.readouterr().err  # a message, not a result: on stderr
    assert "strategy full" in err and "AdamW state" in err


@pytest.mark.parametrize("task,strategy", [("lm", s) for s in LM_STRATEGIES] + [("classify", s) for s in STRATEGIES])
def test_every_strategy_lowers_the_loss(task, strategy):
    model = _clf() if task == "classify" else _lm()
    apply_strategy(model, strategy, **({"lora_rank": 4} if strategy == "lora" else {}), verbose=False)
    torch.manual_seed(2)
    batch = _clf_batch() if task == "classify" else _lm_batch()
    with torch.no_grad():
        first = _loss(model, batch).item()
    _train(model, batch, steps=15)
    with torch.no_grad():
        last = _loss(model, batch).item()
    print(f"{task}/{strategy}: loss {first:.3f} -> {last:.3f}")
    assert last < 0.9 * first


def test_bad_strategy_arguments():
    with pytest.raises(ValueError, match="unknown strategy 'adapter'"):
        apply_strategy(_lm(), "adapter")
    with pytest.raises(ValueError, match=r"n_trainable_blocks must be an integer in \[0, 3\]"):
        apply_strategy(_lm(), "partial", n_trainable_blocks=4)
    with pytest.raises(ValueError, match="n_trainable_blocks"):
        apply_strategy(_lm(), "partial", n_trainable_blocks=-1)
    for not_a_count in (1.5, True):  # an audit: 1.5 was a bare TypeError from a slice, True trained 1 block
        with pytest.raises(TypeError, match=rf"n_trainable_blocks must be an integer, got (the bool )?{not_a_count}"):
            apply_strategy(_lm(), "partial", n_trainable_blocks=not_a_count)
    with pytest.raises(ValueError, match="'frozen' trains only a new head, and the lm task has none"):
        apply_strategy(_lm(), "frozen")
    with pytest.raises(ValueError, match="train_embeddings applies to the 'partial' strategy only"):
        apply_strategy(_lm(), "lora", train_embeddings=True)
    with pytest.raises(ValueError, match="float16"):  # e.g. the shipped checkpoint, loaded as stored
        apply_strategy(_lm().half(), "full")
    with pytest.raises(ValueError, match="the weights to train are bfloat16: AdamW's small updates"):
        apply_strategy(_lm().bfloat16(), "partial")
    with pytest.raises(ValueError, match="float16"):  # a head with a hidden layer is checked too
        apply_strategy(_clf(hidden=(16,)).half(), "frozen")
    # A refused call leaves the model as it was: no adapters injected, nothing frozen.
    half = _lm().half()
    with pytest.raises(ValueError, match="float16"):
        apply_strategy(half, "lora")
    assert not any(isinstance(m, LoRALinear) for m in half.modules()) and all(p.requires_grad for p in half.parameters())
    apply_strategy(half.float(), "lora", verbose=False)  # now it works, and says nothing about adapters
    trainable = sum(p.numel() for p in half.parameters() if p.requires_grad)
    for strategy in ("lora", "partial", "full"):  # partial trained some adapters and froze others (a fine-tuner's audit)
        with pytest.raises(ValueError, match="already has LoRA adapters"):
            apply_strategy(half, strategy, verbose=False)
    assert sum(p.numel() for p in half.parameters() if p.requires_grad) == trainable  # the adapters still train
    one = _lm()
    apply_strategy(one, "lora", lora_targets="c_attn", verbose=False)  # a str names targets as the CLI's flag does
    assert sum(isinstance(m, LoRALinear) for m in one.modules()) == one.config.n_layer


@pytest.mark.parametrize("strategy,option,value,owner", [
    ("full", "n_trainable_blocks", 2, "partial"), ("lora", "n_trainable_blocks", 0, "partial"),
    ("partial", "lora_rank", 4, "lora"), ("full", "lora_alpha", 32.0, "lora"), ("partial", "lora_dropout", 0.1, "lora"),
    ("full", "lora_targets", ("attn.c_attn",), "lora"), ("partial", "lora_targets", "mlp.c_fc", "lora"),
])
def test_an_option_the_strategy_would_ignore_is_refused(strategy, option, value, owner):
    """A user who set --lora-rank believes it took effect: with --strategy partial it would not."""
    model = _lm()
    with pytest.raises(ValueError, match=rf"^{option}=.* applies to strategy '{owner}' only; strategy '{strategy}' would ignore it "
                                         rf"\(leave it unset, or use strategy '{owner}'\)$") as refused:
        apply_strategy(model, strategy, **{option: value})
    assert "--" not in str(refused.value)  # apply_strategy is Python only: its arguments are no flags
    assert all(p.requires_grad for p in model.parameters()), "a refused call changes nothing"
    # The CLI's and finetune()'s config: its fields are the flags, so the flag is named beside the field.
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=rf"^{option}=.* \({flag}\) applies to strategy '{owner}' only"):
        FinetuneConfig(init="x", data="d", strategy=strategy, **{option: value if option != "lora_targets" else "attn.c_attn"})


@pytest.mark.parametrize("option,value,owners", [("pooling", "mean", "'classify'"), ("head_hidden", "64", "'classify'"),
                                                 ("num_labels", 3, "'classify'"), ("val_data", "dev.tsv", "'classify' or 'sft'"),
                                                 ("max_examples", 100, "'classify'"), ("max_val_examples", 10, "'classify'")])
def test_a_classify_option_with_the_lm_task_is_refused(option, value, owners):
    with pytest.raises(ValueError, match=rf"^{option}=.* \(--{option.replace('_', '-')}\) applies to task {owners} only; "
                                         "task 'lm' would ignore it"):
        FinetuneConfig(init="x", data="d", task="lm", **{option: value})
    FinetuneConfig(init="x", data="d", task="classify", **{option: value})


def test_an_option_left_at_its_default_is_fine_with_any_strategy():
    apply_strategy(_lm(), "full", n_trainable_blocks=1, lora_rank=8, lora_targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
                   verbose=False)
    FinetuneConfig(init="x", strategy="partial", lora_targets="attn.c_attn, attn.c_proj,mlp.c_fc,mlp.c_proj", n_trainable_blocks=2)


def test_cli_refuses_an_ignored_option_before_any_work(base, tmp_path, capsys, monkeypatch):
    assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), "--strategy", "full", "--lora-rank", "4") == 2
    assert ("lora_rank=4 (--lora-rank) applies to strategy 'lora' only; strategy 'full' would ignore it (leave it unset, "
            "or use strategy 'lora')") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # Typed at its default value, a flag is just as ignored: the config alone cannot tell, the command line can.
    for flags, message in ((["--strategy", "partial", "--lora-rank", "8"], "lora_rank=8 (--lora-rank) applies to strategy 'lora' only"),
                           (["--pooling", "last"], "pooling='last' (--pooling) applies to task 'classify' only; task 'lm' would ignore it"),
                           (["--strategy", "lora", "--no-train-embeddings"],
                            "train_embeddings=False (--no-train-embeddings) applies to strategy 'partial'")):
        assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), *flags) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # A setting only the model can judge (a rank above a layer's width, a target no layer has) is
    # refused before the lm task tokenizes its text into OUT_DIR/data: minutes on a large corpus.
    for flag, value, problem in (("--lora-rank", "4096", "LoRA rank 4096 exceeds transformer.h.0.attn.c_attn's smaller side"),
                                 ("--lora-targets", "q_proj", "LoRA targets ['q_proj'] match no nn.Linear")):
        assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), flag, value) == 2
        assert problem in capsys.readouterr().err
        assert not (tmp_path / "o" / "data").exists()
    # So are more trainable blocks than the model has, for classify too: not after reading every example.
    def no_reading(cfg):
        raise AssertionError("the data was read")

    monkeypatch.setattr("minigpt.finetune.load_classification_data", no_reading)
    for task, data in (("classify", "cls.tsv"), ("lm", "corpus.txt")):
        assert _run(base, tmp_path / "o", "--task", task, "--data", str(base / data), "--strategy", "partial",
                    "--n-trainable-blocks", "9") == 2
        assert "n_trainable_blocks must be an integer in [0, 2] (the model has 2 blocks), got 9" in capsys.readouterr().err
        assert not (tmp_path / "o" / "data").exists()
    # --n-trainable-blocks without --strategy: the default strategy is lora, which has no blocks to pick.
    assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), "--n-trainable-blocks", "2") == 2
    assert "strategy 'lora' would ignore it" in capsys.readouterr().err


def test_read_tsv(tmp_path):
    f = tmp_path / "ok.tsv"
    f.write_text("sentence\tlabel\na fine film \t1\nawful\t0\n\nwith\ta tab\t2\n")
    assert read_tsv(f) == (["a fine film", "awful", "with\ta tab"], [1, 0, 2])
    f.write_text("good\t1\nbad\t0\n")  # no header
    assert read_tsv(f) == (["good", "bad"], [1, 0])
    f.write_text("12\tangry men\t1\nbad\t0\n")  # a text that starts with a number, in a file without an index column
    assert read_tsv(f) == (["12\tangry men", "bad"], [1, 0])
    f.write_text("\ufeffgood\t1\nbad\t0\n")  # a BOM first (some editors write one): not part of the first text
    assert read_tsv(f) == (["good", "bad"], [1, 0])
    # A finetuner's audit: Unicode line breaks inside a sentence (U+0085 from cp1252 text read as
    # Latin-1, U+2028, a form feed) cut its line, and the file was refused as having no tab.
    f.write_text("it\x85s great\t1\nthe \u2028 end\t0\nform\x0cfeed\t1\n", encoding="utf-8")
    assert read_tsv(f) == (["it\x85s great", "the \u2028 end", "form\x0cfeed"], [1, 0, 1])


@pytest.mark.parametrize("content,message", [
    ("", "holds no examples"),
    ("sentence\tlabel\n", "holds no examples"),
    ("good\t1\nno tab here\n", r":2: expected 'text<TAB>label'"),
    ("good\t1\nbad\tnegative\n", r":2: label 'negative' is not an integer"),
    ("good\t1\nbad\t-1\n", r":2: label -1 is negative"),
    ("good\t1\n \t0\n", r":2: empty text"),
    ("great movie\t\nbad\t0\n", r":1: label '' is not an integer"),  # a first example missing its label: no header
    ("good\t1\nbad\t1_0\n", r":2: label '1_0' is not an integer"),  # int() would read 10
    ("good\t1\nbad\t\u0661\n", r":2: label '\u0661' is not an integer"),  # Arabic-Indic one: int() reads 1
    # GLUE's index column: it would have joined every text ('0\tgreat movie'), silently.
    ("index\tsentence\tlabel\n0\tgreat movie\t1\n", r":1: the header names 3 columns \(index, sentence, label\); classify reads two"),
    # A review finding: pandas' default to_csv writes its index as an unnamed first column.
    ("\tsentence\tlabel\n0\tgreat movie\t1\n", r":1: the header names 3 columns \('', sentence, label\); classify reads two, "
                                             r"text<TAB>label: the unnamed first is pandas' index, which "
                                             r"to_csv\(sep='\\t', index=False\) leaves out; or keep just those"),
    # A finetuner's audit: without the header, the index joined every text; and a first example
    # with a typo for its label ('l') was skipped as a header.
    ("0\tgreat movie\t1\n1\tawful\t0\n", r"every line has 3 or more columns, the first an integer \('0\\tgreat movie'"),
    ("great movie\tl\ngood movie\t1\n", r":1: label 'l' is not an integer class id \(a first line is taken for a header only when"),
])
def test_read_tsv_rejects_bad_files(tmp_path, content, message):
    f = tmp_path / "bad.tsv"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_tsv(f)
    with pytest.raises(FileNotFoundError):
        read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match=f"TSV file {tmp_path} is a directory; pass the file itself"):  # not "does not exist"
        read_tsv(tmp_path)


def test_read_tsv_names_a_file_that_is_not_utf8(tmp_path):
    (tmp_path / "latin1.tsv").write_bytes("très bien\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.tsv is not UTF-8 text: byte 0xe8 at offset 2"):
        read_tsv(tmp_path / "latin1.tsv")


def test_a_windows_1252_file_is_told_to_convert_from_cp1252_not_latin1(tmp_path):
    """A data audit: a Windows-1252 file (Excel, Notepad) was told `iconv -f latin1`, which turns its
    ’ – “ ” € (bytes 0x80-0x9F) into C1 control characters that minigpt then reads as text. A first
    bad byte in 0x80-0x9F now names cp1252; others (é, 0xe9) still latin1."""
    (tmp_path / "excel.tsv").write_bytes("I don\u2019t like it \u2013 5\u20ac\tnegative\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"byte 0x92 at offset 5; convert it first \(e.g. iconv -f cp1252 -t utf-8\)"):
        read_tsv(tmp_path / "excel.tsv")
    (tmp_path / "latin1.tsv").write_bytes("café\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"byte 0xe9 at offset 3; convert it first \(e.g. iconv -f latin1 -t utf-8\)"):
        read_tsv(tmp_path / "latin1.tsv")
    (tmp_path / "undefined.tsv").write_bytes(b"a\x81b\t1\n")  # no cp1252 character either: iconv -f cp1252 refuses it
    with pytest.raises(ValueError, match=r"byte 0x81 at offset 1; convert it first \(e.g. iconv -f latin1 -t utf-8\)"):
        read_tsv(tmp_path / "undefined.tsv")


@pytest.mark.parametrize("content", [
    "r001\tgreat movie\tpositive\nr002\tawful film\tnegative\nr003\tloved it\tpositive\nr004\tboring\tnegative\n",  # an id
    "great movie\tweb\tpositive\nawful film\tapp\tnegative\nloved it\tweb\tpositive\nboring\tapp\tnegative\n",  # a source
    "a\tb\tc\t1\nd\te\tf\t0\ng\th\ti\t1\nj\tk\tl\t0\n",  # 4 columns
])
def test_a_tsv_whose_every_line_has_the_same_3_or_more_columns_is_refused(tmp_path, content):
    """A data audit: only an integer first column was refused; an id like r001, or a column after
    the text, was read as part of every text ('r001\tgreat movie'). Every line with the same 3+
    columns is refused now, whatever the first holds; a text wholly CSV-quoted is one column
    whatever tabs it holds, and texts with a tab on some lines only are read as before."""
    f = tmp_path / "cols.tsv"
    f.write_text(content)
    with pytest.raises(ValueError, match=r"cols.tsv: every line has [34] columns \('.*' ...\): the ones before the label "
                                         r"would join every text; classify reads two, text<TAB>label: keep just those "
                                         r"\(e.g. with `cut -f`\), or, if the tabs are inside the texts, CSV-quote each"):
        read_tsv(f)
    f.write_text('"great\tmovie"\tpositive\n"awful\tfilm"\tnegative\n"loved\tit"\tpositive\n"so\tdull"\tnegative\n')
    assert read_tsv(f) == (["great\tmovie", "awful\tfilm", "loved\tit", "so\tdull"],  # csv.writer's quoting
                           ["positive", "negative", "positive", "negative"])
    f.write_text("great\tmovie\tpositive\nawful\tnegative\nloved it\tpositive\n")  # a tab in one text of three
    assert read_tsv(f) == (["great\tmovie", "awful", "loved it"], ["positive", "negative", "positive"])


def test_an_id_column_is_refused_when_csv_writer_quoted_a_text_holding_a_tab(tmp_path):
    """A review finding: `id<TAB>text<TAB>label` written by csv.writer, one text holding a tab (so
    quoted), was read: the quoted line counted 4 columns, the others 3, so not every line had the
    same width, and the ids joined the texts, quotes left in ('r002\t"awful\tfilm"'). Columns are
    counted as CSV now; a stray quote (never closed) neither raises nor hides the tabs after it."""
    import csv

    rows = [("r001", "great movie", "positive"), ("r002", "awful\tfilm", "negative"),
            ("r003", "loved it", "positive"), ("r004", "boring", "negative")]
    f = tmp_path / "ids.tsv"
    with open(f, "w", newline="") as out:
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows)
    assert '"awful\tfilm"' in f.read_text()
    with pytest.raises(ValueError, match=r"ids.tsv: every line has 3 columns \('r001\\tgreat movie' ...\)"):
        read_tsv(f)
    f.write_text(f.read_text() + 'r005\t"unclosed\tpositive\n')  # a stray quote: its tabs still count
    with pytest.raises(ValueError, match=r"ids.tsv: every line has 3 columns"):
        read_tsv(f)


def test_a_tab_in_every_text_of_a_tiny_file_and_two_texts_alike_are_read(tmp_path):
    """A review finding: the width and label<TAB>text checks refused tiny files: one example whose
    text holds a tab, three title<TAB>body texts, and `good<TAB>1`, `good<TAB>0` (taken for swapped
    columns). Below FEW_LINES examples neither check runs; from there on, the width error also
    says how to keep the tabs (CSV-quote the texts), as `cut -f` would drop part of each text."""
    from minigpt.classify_data import FEW_LINES

    f = tmp_path / "tiny.tsv"
    for content, read in [
        ("Loved it\tgreat cast, great plot\t1\n", (["Loved it\tgreat cast, great plot"], [1])),
        ("Great\tloved it\t1\nBad\thated it\t0\nMeh\tso so\t0\n", (["Great\tloved it", "Bad\thated it", "Meh\tso so"], [1, 0, 0])),
        ("good\t1\ngood\t0\n", (["good", "good"], [1, 0])),
    ]:
        f.write_text(content)
        assert read_tsv(f) == read
    titles = [(f"Title {i}", f"body {i}", i % 2) for i in range(FEW_LINES)]
    f.write_text("".join(f"{title}\t{body}\t{y}\n" for title, body, y in titles))
    with pytest.raises(ValueError, match=r"every line has 3 columns .* or, if the tabs are inside the texts, CSV-quote "
                                         r"each text \(as Python's csv module writes it\)$"):
        read_tsv(f)
    f.write_text("".join(f'"{title}\t{body}"\t{y}\n' for title, body, y in titles))
    assert read_tsv(f) == ([f"{title}\t{body}" for title, body, _ in titles], [y for *_, y in titles])


def test_the_classify_line_says_where_val_came_from_and_an_unread_validation_tsv_is_refused(tmp_path):
    """A data audit: --data DIR holding train.tsv and validation.tsv (Hugging Face's split name)
    held out training rows without a word, and the `classify:` line did not say where val came
    from. A DIR with validation.tsv, val.tsv or valid.tsv but no dev.tsv is refused, naming
    --val-data; a test.tsv is named as not read (a test set must not choose best/); and the line
    says the source: --val-data, dev.tsv, or rows held out of train.tsv."""
    from minigpt.classify_data import val_source

    train = "".join(f"example {i}\t{i % 2}\n" for i in range(20))
    (tmp_path / "train.tsv").write_text(train)
    assert val_source(data_cfg(tmp_path)) == f"held out of {tmp_path / 'train.tsv'} by --val-fraction 0.1"
    (tmp_path / "test.tsv").write_text("a test\t1\n")
    assert val_source(data_cfg(tmp_path)).endswith(f"; {tmp_path / 'test.tsv'} is not read: score it after training "
                                                   f"with `minigpt eval`, or pass --val-data {tmp_path / 'test.tsv'} "
                                                   "if it is the validation set")
    for name in ("validation.tsv", "val.tsv", "valid.tsv"):
        (tmp_path / name).write_text("a val\t1\n")
        with pytest.raises(ValueError, match=f"--data {tmp_path} holds {name} but no dev.tsv, the validation file "
                                             f"--data DIR reads: pass --val-data {tmp_path / name} .* pass --data "
                                             f"{tmp_path / 'train.tsv'}"):
            load_classification_data(data_cfg(tmp_path))
        cfg = data_cfg(tmp_path, val_data=str(tmp_path / name))
        assert load_classification_data(cfg)["val"] == (["a val"], [1])
        assert val_source(cfg) == f"from --val-data {tmp_path / name}"
        (tmp_path / name).unlink()
    (tmp_path / "validation.tsv").write_text("a val\t1\n")
    (tmp_path / "dev.tsv").write_text("a dev\t0\n")  # dev.tsv is read: validation.tsv is no validation file here
    assert load_classification_data(data_cfg(tmp_path))["val"] == (["a dev"], [0])
    assert val_source(data_cfg(tmp_path)) == f"from {tmp_path / 'dev.tsv'}"
    assert len(load_classification_data(data_cfg(tmp_path / "train.tsv"))["val"][0]) == 2  # a file: held out


def test_a_class_id_past_the_last_class_is_refused_by_file_and_line(tmp_path):
    """A data audit: a val class id past the training labels was refused without naming the file
    or line (`val labels [2] are out of range`), where a name gets file:line. The error now starts
    with the first line holding it, and says to pass --num-labels if that class really exists."""
    import minigpt.finetune as finetune

    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\nnice\t1\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nmixed bag\t2\nanother\t2\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'dev.tsv'}:3: val label 2 is out of range: with "
                                                   "num_labels=2, labels must be in [0, 2); if class 2 really exists, "
                                                   "pass --num-labels 3")):
        finetune._classify_task(data_cfg(tmp_path, num_labels=None), None, None, None, False)
    (tmp_path / "dev.tsv").write_text("good film\t1\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'train.tsv'}:2: train label 1 is out of range: "
                                                   "with num_labels=1")):
        finetune._classify_task(data_cfg(tmp_path, num_labels=1), None, None, None, False)
    (tmp_path / "dev.tsv").write_text("good film\t1\nmixed bag\t2\n")  # an --init classifier's head has its classes
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'dev.tsv'}:2: val label 2 is out of range: with "
                                                   "num_labels=2, labels must be in [0, 2); --init clf's head has no "
                                                   "more: if class 2 really exists, start from a language model with "
                                                   "--num-labels 3")):
        finetune._classify_task(data_cfg(tmp_path, num_labels=None, init="clf"), _clf(), None, None, False)


# ---- `minigpt finetune` end to end, on a tiny model with a tiny trained tokenizer ----------------

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 40


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained-looking model dir (HF layout + tokenizer), a text file and a TSV."""
    root = save_tiny_base(tmp_path_factory.mktemp("finetune"), CORPUS, 300)
    (root / "corpus.txt").write_text(CORPUS)
    return root


def _run(base, out, *extra):
    from minigpt.finetune import main

    # classify scores every val example; a resumed run has its own setting
    sampled = () if "classify" in extra or "--resume" in extra else ("--eval-iters", "2")
    return main(["--init", str(base / "base"), "--out", str(out), "--max-iters", "4", "--eval-interval", "2",
                 *sampled, "--batch-size", "4", "--block-size", "32", "--warmup-iters", "1", *extra])


def test_cli_lm_lora_saves_a_merged_gpt2_that_transformers_opens(base, tmp_path, capsys):
    from transformers import GPT2LMHeadModel

    assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), "--strategy", "lora", "--lr", "1e-2") == 0
    # One summary line: the strategy's trial run on a weightless copy (before tokenizing) is silent.
    assert capsys.readouterr().err.count("strategy lora: training") == 1
    summary = json.loads((tmp_path / "o" / "finetune_summary.json").read_text())
    assert summary["strategy"] == "lora" and summary["steps"] == 4 and summary["trainable_params"] < summary["total_params"]
    # The best evaluation is reported beside the last one, with its step: the one best/ holds.
    best = json.loads((tmp_path / "o" / "best" / "metrics.json").read_text())
    assert (summary["best_val_loss"], summary["best_val_loss_step"]) == (best["val_loss"], best["step"])
    assert summary["best_val_loss"] <= summary["val_loss"] and summary["best_val_loss_step"] in (2, 4)
    assert {"loss.png", "log.jsonl", "vocab.json", "merges.txt", "training_state.pt"} <= {p.name for p in (tmp_path / "o").iterdir()}
    ours = GPT.from_pretrained(tmp_path / "o")  # a plain GPT-2: the adapters were merged in
    assert not torch.equal(ours.transformer.h[0].attn.c_attn.weight, GPT.from_pretrained(base / "base").transformer.h[0].attn.c_attn.weight)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "o").eval()
    idx = torch.randint(0, ours.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(idx)[0] - hf(idx).logits).abs().max().item()
    print(f"fine-tuned LM: max |minigpt - transformers| = {diff:.2e}")
    assert diff < 2e-6  # measured 2.4e-7
    # The adapters alone, beside the merged model (and best/'s beside best/'s): on the base, the same model.
    from minigpt.lora import load_adapters, merge_lora

    for ck in (tmp_path / "o", tmp_path / "o" / "best"):
        adapter = json.loads((ck / "adapter" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(base / "base") and adapter["peft_type"] == "LORA"
        rebuilt = GPT.from_pretrained(base / "base")
        load_adapters(rebuilt, ck / "adapter")
        with torch.no_grad():
            torch.testing.assert_close(merge_lora(rebuilt)(idx)[0], GPT.from_pretrained(ck)(idx)[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(GPT.from_pretrained(ck / "adapter")(idx)[0], GPT.from_pretrained(ck)(idx)[0],
                                       rtol=1e-5, atol=1e-5)  # the folder alone: its base (--init), adapted
    # A review: finetune --init OUT/adapter said the folder "is no checkpoint directory", where
    # generate and eval load it; it now says what it holds and how to start from the model it makes.
    capsys.readouterr()
    assert _run(base, tmp_path / "again", "--data", str(base / "corpus.txt"), "--init", str(tmp_path / "o" / "adapter")) == 2
    assert (f"--init {tmp_path / 'o' / 'adapter'} holds LoRA adapters alone (for the base model '{base / 'base'}'): start "
            f"from the model they make, merged: save it with GPT.from_pretrained('{tmp_path / 'o' / 'adapter'}')"
            f".save_pretrained(DIR), then pass --init DIR --tokenizer {base / 'base'}") in capsys.readouterr().err


def test_cli_classify_says_how_many_texts_the_context_cuts(base, tmp_path, capsys, monkeypatch):
    """Texts longer than --block-size keep their first tokens: said, with the counts, not done
    silently. And done (a mutation audit: keeping the last tokens instead passed every test)."""
    import minigpt.finetune as finetune

    batches, real_pad_right = [], finetune.pad_right
    monkeypatch.setattr(finetune, "pad_right", lambda rows, pad: (batches.extend(rows), real_pad_right(rows, pad))[1])
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen", "--max-iters", "1")
    assert _run(base, tmp_path / "short", *args, "--block-size", "3") == 0
    tok = Tokenizer.from_pretrained(base / "base")
    texts = [line.split("\t")[0] for line in (base / "cls.tsv").read_text().splitlines()[1:]]
    firsts = {tuple(tok.encode(t)[:3]) for t in texts}
    assert batches and all(tuple(row) in firsts for row in batches)
    assert re.search(r"classify: 36 train / 4 val texts are longer than --block-size 3 tokens and keep their first 3 "
                     r"\(the longest has \d+\)", capsys.readouterr().err)
    assert _run(base, tmp_path / "long", *args) == 0  # --block-size 32: every text fits
    assert "longer than --block-size" not in capsys.readouterr().out


def test_a_classifier_whose_tokenizer_has_no_pad_records_none(base, tmp_path):
    """Bug guarded (a finetuner's audit): with no EOS or pad token, batches were padded with id 0
    and the checkpoint recorded pad_token_id 0, a real token; transformers, and minigpt without a
    mask, then took a text's trailing id 0 for padding and scored other logits than finetune had."""
    from transformers import GPT2ForSequenceClassification

    tok = Tokenizer.train(CORPUS, 300, special_tokens=(), progress=False)
    torch.manual_seed(0)
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300, bos_token_id=None, eos_token_id=None)).save_pretrained(tmp_path / "init")
    tok.save_pretrained(tmp_path / "init")
    out = tmp_path / "o"
    from minigpt.finetune import main

    assert main(["--init", str(tmp_path / "init"), "--out", str(out), "--task", "classify", "--data", str(base / "cls.tsv"),
                 "--strategy", "full", "--max-iters", "2", "--batch-size", "4", "--block-size", "32", "--warmup-iters", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["pad_token_id"] is None
    idx = torch.tensor([tok.encode("the speech was good indeed") + [0]])  # ends in id 0, a real token
    ours, hf = GPTClassifier.from_pretrained(out), GPT2ForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        masked, plain, theirs = ours(idx, torch.ones_like(idx))[0], ours(idx)[0], hf(idx).logits
    assert torch.allclose(masked, plain, atol=1e-6) and torch.allclose(plain, theirs, atol=1e-5)


def test_cli_classify_saves_a_classifier_that_transformers_opens(base, tmp_path, monkeypatch):
    from transformers import GPT2ForSequenceClassification

    import minigpt.finetune

    # Peak memory has one home, generate's (what `generate --stats` reports): the summary reads it.
    monkeypatch.setattr(minigpt.finetune, "peak_memory_bytes", lambda device: 3 * 2**20 if device.type == "cpu" else 0)
    out = tmp_path / "o"
    assert _run(base, out, "--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "partial", "--lr", "1e-2") == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert (summary["peak_memory_mib"], summary["peak_memory_kind"]) == (3, "process peak RSS")
    assert 0 <= summary["val_accuracy"] <= 1
    # Resumed with nothing left to do, in a process that held less (a review): the run's peak stays;
    # a new run's OUT_DIR holding another run's summary takes nothing from it.
    monkeypatch.setattr(minigpt.finetune, "peak_memory_bytes", lambda device: 2**20)
    assert _run(base, out, "--resume") == 0
    assert json.loads((out / "finetune_summary.json").read_text()) == summary
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "finetune_summary.json").write_text(json.dumps({**summary, "peak_memory_mib": 40000}))
    assert _run(base, tmp_path / "o2", "--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen",
                "--max-iters", "1") == 0
    assert json.loads((tmp_path / "o2" / "finetune_summary.json").read_text())["peak_memory_mib"] == 1
    evals = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in evals) >= summary["val_accuracy"]
    assert summary["best_val_accuracy_step"] in (2, 4) and "best_val_loss_step" in summary
    ours = GPTClassifier.from_pretrained(out)
    hf = GPT2ForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.num_labels == 2
    idx, mask = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    idx[mask == 0] = hf.config.pad_token_id
    with torch.no_grad():
        diff = (ours(idx, mask)[0] - hf(idx, attention_mask=mask).logits).abs().max().item()
    print(f"fine-tuned classifier: max |minigpt - transformers| = {diff:.2e}")
    assert diff < 1e-6  # measured 5e-8
    # Texts batched by transformers' own tokenizer (a finetuner audit: it had no pad token, so
    # padding=True and pipeline batching raised): padded with the classifier's pad, same logits.
    from transformers import AutoTokenizer

    texts = ["the speech was good indeed", "bad"]
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"][1, -1] == hf.config.pad_token_id
    # The run's --block-size as the tokenizer's limit (an interop audit: none was written, so HF's
    # truncation=True never cut, and its text-classification pipeline failed on a long text; a
    # finetuner's: n_positions, so the pipeline read more of each text than finetune had scored).
    assert hf_tokenizer.model_max_length == 32 < hf.config.n_positions
    assert len(hf_tokenizer("good " * 500, truncation=True)["input_ids"]) == 32
    with torch.no_grad():
        alone = torch.cat([ours(torch.tensor([Tokenizer.from_pretrained(out).encode(t)]))[0] for t in texts])
        assert torch.allclose(hf(**batch).logits, alone, atol=1e-5)


def test_cli_classify_with_an_mlp_head_trains_and_reloads_it(base, tmp_path):
    """--head-hidden builds a head with a hidden layer; the run crashed in apply_strategy before."""
    out = tmp_path / "o"
    assert _run(base, out, "--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen",
                "--head-hidden", "8", "--lr", "1e-2") == 0
    clf = GPTClassifier.from_pretrained(out)
    assert clf.hidden == (8,) and [tuple(p.shape) for p in clf.score.parameters()] == [(8, clf.config.n_embd), (8,), (2, 8)]


def test_a_classify_run_records_its_loss_unit_in_the_log(base, tmp_path):
    """A code reread: a classify run's opening log record held "loss_unit": null, and loss.png's
    axis said "nats per text" only because its drawing knew the classify task by name. The run
    records its unit now, which the drawing reads (minigpt/run_log.py's `logged_loss_unit`)."""
    out = tmp_path / "o"
    assert _run(base, out, "--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen",
                "--max-iters", "2") == 0
    opening = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert opening["run"] == "start" and opening["loss_unit"] == "nats per text"


def test_cli_classify_reads_special_token_text_as_text_and_refuses_an_unused_val_fraction(base, tmp_path, monkeypatch,
                                                                                         capsys):
    """Reviews holding "<|endoftext|>" were refused by the tokenizer's policy, with advice (allowed_special)
    that no flag can follow; each is one example's text. --val-fraction with a validation file would be
    ignored: refused by name."""
    import minigpt.finetune
    from minigpt.classify_data import pad_right

    data = tmp_path / "d"
    data.mkdir()
    rows = [line.replace("was", "was <|endoftext|>") for line in (base / "cls.tsv").read_text().splitlines()]
    (data / "train.tsv").write_text("\n".join(rows) + "\n")  # every example holds the marker
    (data / "dev.tsv").write_text("\n".join(rows[:9]) + "\n")
    batches = []  # the ids the classifier is fed
    monkeypatch.setattr(minigpt.finetune, "pad_right", lambda ids, pad: batches.append(ids) or pad_right(ids, pad))
    assert _run(base, tmp_path / "o", "--task", "classify", "--data", str(data), "--strategy", "frozen") == 0
    eos = GPTClassifier.from_pretrained(tmp_path / "o").config.eos_token_id
    assert batches and all(eos not in row for ids in batches for row in ids)  # the marker's characters, not the id
    assert _run(base, tmp_path / "o2", "--task", "classify", "--data", str(data), "--strategy", "frozen",
                "--val-fraction", "0.3") == 2
    assert f"--val-fraction holds out part of --data when there is no validation file, but here validation comes from " \
           f"{data / 'dev.tsv'}: drop --val-fraction" in capsys.readouterr().err


def test_cli_resume_of_a_lora_classifier_is_exact(base, tmp_path, capsys):
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "lora", "--lr-decay-iters", "4", "--log-interval", "2")
    assert _run(base, tmp_path / "straight", *args) == 0
    assert _run(base, tmp_path / "resumed", *args, "--max-iters", "2") == 0  # stops at step 2 ...
    assert _run(base, tmp_path / "resumed", *args, "--resume") == 0  # ... and continues to 4
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert any("lora_A" in k for k in a["model"]), "the training state keeps the unmerged adapters"
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # Killed after the last checkpoint but before the summary was written: --resume has no step
    # left to run, and still writes the summary of the whole run, the last evaluation included.
    straight = json.loads((tmp_path / "straight" / "finetune_summary.json").read_text())
    (tmp_path / "resumed" / "finetune_summary.json").unlink()
    assert _run(base, tmp_path / "resumed", *args, "--resume") == 0
    resumed = json.loads((tmp_path / "resumed" / "finetune_summary.json").read_text())
    for key in ("steps", "loss", "val_loss", "val_accuracy", "best_val_loss", "best_val_accuracy"):
        assert resumed.get(key) == straight[key], key
    # Adapters of another rank do not fit the saved ones, and another alpha (a finetuner audit:
    # accepted with a warning) would rescale every trained adapter at once: both refused by name,
    # the run left as it was.
    before = (tmp_path / "resumed" / "training_state.pt").read_bytes()
    for flag, value in (("--lora-rank", "4"), ("--lora-alpha", "64")):
        assert _run(base, tmp_path / "resumed", *args, "--resume", "--max-iters", "6", flag, value) == 2
        assert f"is a {flag} {8 if flag == '--lora-rank' else 16.0} run, and a resumed run keeps its" in capsys.readouterr().err
    assert (tmp_path / "resumed" / "training_state.pt").read_bytes() == before
    # An option of another strategy is refused as such, not as a changed setting of this run.
    assert _run(base, tmp_path / "resumed", *args, "--resume", "--strategy", "lora", "--n-trainable-blocks", "2") == 2
    assert "n_trainable_blocks=2 (--n-trainable-blocks) applies to strategy 'partial' only" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["lora", "partial"])
def test_a_training_state_leaves_out_the_frozen_weights_and_resumes_exactly(base, tmp_path, strategy):
    """The state held every weight, frozen ones included: a LoRA run of GPT-2 saved another
    GBs-large copy of the model beside its checkpoint, for MBs of adapters. It now holds the weights
    that train, and the frozen ones' names and digest: --resume takes them from --init again, and
    ends where an unbroken run ends, bit for bit."""
    args = ("--data", str(base / "corpus.txt"), "--strategy", strategy, "--lr-decay-iters", "4", "--log-interval", "2")
    if strategy == "partial":
        args += ("--n-trainable-blocks", "1")
    assert _run(base, tmp_path / "straight", *args) == 0
    assert _run(base, tmp_path / "resumed", *args, "--max-iters", "2") == 0
    assert _run(base, tmp_path / "resumed", *args, "--resume") == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("straight", "resumed"))
    model = GPT.from_pretrained(base / "base")
    apply_strategy(model, strategy, **({"n_trainable_blocks": 1} if strategy == "partial" else {}), verbose=False)
    trains = {name for name, p in model.named_parameters() if p.requires_grad}
    assert set(a["model"]) == trains and set(a["frozen"]["names"]) == set(model.state_dict()) - trains
    assert a["step"] == b["step"] == 4 and a["frozen"] == b["frozen"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_resume_reuses_the_tokens_of_a_data_file_whose_name_is_not_utf8(base, tmp_path, capsys):
    """A review: meta.json came to store a path's bytes read as UTF-8 while the resumed run compared
    str(path), so a --data file named in Latin-1 ("caf\\xe9.txt"; under LC_ALL=C any non-ASCII
    name) never matched, and every --resume tokenized the whole text again. Both sides now spell it
    as `stored_path` does."""
    data = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.txt")  # how Python holds the name: "caf\udce9.txt"
    shutil.copy(base / "corpus.txt", data)
    args = ("--data", data, "--strategy", "lora")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    assert json.loads((tmp_path / "o" / "data" / "meta.json").read_text())["sources"] == [f"{tmp_path}/caf\\xe9.txt"]
    capsys.readouterr()
    assert _run(base, tmp_path / "o", *args, "--resume") == 0
    assert "tokenizing" not in capsys.readouterr().err


def test_resume_refuses_frozen_weights_that_changed_under_init(base, tmp_path, capsys):
    """The frozen weights come from --init at --resume: an --init whose weights changed since the
    run started (another revision of a hub model, files overwritten) would pair the trained
    adapters with other weights, a different model, without a word. Refused, the run left as it was."""
    init = tmp_path / "init"
    shutil.copytree(base / "base", init)
    args = ("--data", str(base / "corpus.txt"), "--strategy", "lora")
    assert _run(base, tmp_path / "o", *args, "--init", str(init), "--max-iters", "2") == 0
    before = (tmp_path / "o" / "training_state.pt").read_bytes()
    model = GPT.from_pretrained(init)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] += 1
    model.save_pretrained(init)
    capsys.readouterr()
    assert _run(base, tmp_path / "o", *args, "--init", str(init), "--resume") == 2
    assert (f"training_state.pt was saved beside other frozen weights than --init {init} holds now" in
            capsys.readouterr().err)
    assert (tmp_path / "o" / "training_state.pt").read_bytes() == before


def test_a_state_saved_with_every_weight_and_a_changed_init_is_refused(base, tmp_path, capsys):
    """A review: a state saved with every weight (before the frozen ones were left out), resumed
    with an --init whose weights changed, trained on with the state's frozen weights and saved the
    digest of --init's, so the resume after it swapped the frozen weights without a word. Its frozen
    weights are now compared with --init's, and refused as a digest that differs is."""
    init = tmp_path / "init"
    shutil.copytree(base / "base", init)
    args = ("--data", str(base / "corpus.txt"), "--strategy", "lora", "--init", str(init))
    assert _run(base, tmp_path / "old", *args, "--max-iters", "2") == 0
    path = tmp_path / "old" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    model = GPT.from_pretrained(init)
    apply_strategy(model, "lora", verbose=False)
    state["model"] = {**model.state_dict(), **state["model"]}
    del state["frozen"]
    torch.save(state, path)
    with torch.no_grad():
        model = GPT.from_pretrained(init)
        model.transformer.h[0].mlp.c_fc.weight[0, 0] += 1
    model.save_pretrained(init)
    capsys.readouterr()
    assert _run(base, tmp_path / "old", *args, "--resume") == 2
    assert f"was saved beside other frozen weights than --init {init} holds now" in capsys.readouterr().err


def test_resume_with_init_the_runs_own_checkpoint_says_so(base, tmp_path, capsys):
    """A review: `--resume --init OUT` on a LoRA run (its merged checkpoint as the base) was said to
    be an --init "changed since (other files, another revision)". It is named as what it is, with
    the --init the run started from."""
    args = ("--data", str(base / "corpus.txt"), "--strategy", "lora")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    capsys.readouterr()
    for init in (tmp_path / "o", tmp_path / "o" / "best"):
        assert _run(base, tmp_path / "o", *args, "--resume", "--init", str(init)) == 2
        assert (f"--init {init} is this run's own checkpoint, whose weights hold what the run trained (merged in), not "
                f"the frozen weights it trains beside: give --init the checkpoint the run started from (the run started "
                f"from --init {base / 'base'})") in capsys.readouterr().err


def test_a_state_saved_with_every_weight_still_resumes(base, tmp_path):
    """States written before the frozen weights were left out hold them all, and no "frozen"
    entry: such a run resumes as it did, to the weights of an unbroken run."""
    args = ("--data", str(base / "corpus.txt"), "--strategy", "lora", "--lr-decay-iters", "4", "--log-interval", "2")
    assert _run(base, tmp_path / "straight", *args) == 0
    assert _run(base, tmp_path / "old", *args, "--max-iters", "2") == 0
    path = tmp_path / "old" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    model = GPT.from_pretrained(base / "base")
    apply_strategy(model, "lora", verbose=False)
    state["model"] = {**model.state_dict(), **state["model"]}  # the frozen weights too, as a state of old held them
    del state["frozen"]
    torch.save(state, path)
    assert _run(base, tmp_path / "old", *args, "--resume") == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("straight", "old"))
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_classify_val_loss_is_over_every_val_example(base, tmp_path, capsys):
    """A finetuner audit: a classifier's val_loss was the mean of --eval-iters sampled batches (160
    of SST-2's 6,735 dev examples by default: 0.731 logged, 0.712 over all), and best/ was chosen by
    it. It is now the cross-entropy over every val example, recomputed here from the saved model
    with transformers' classifier; no perplexity (a loss per text, not per token); --eval-iters
    typed with classify is refused, as it would be ignored."""
    import torch.nn.functional as F
    from transformers import GPT2ForSequenceClassification

    val = [f"the speech was {w} indeed" for w in ("bad", "good", "fine", "poor", "very bad", "rather good", "fine fine")]
    labels = [0, 1, 1, 0, 0, 1, 1]
    (tmp_path / "val.tsv").write_text("".join(f"{t}\t{y}\n" for t, y in zip(val, labels)))
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--val-data", str(tmp_path / "val.tsv"), "--strategy", "full")
    assert _run(base, tmp_path / "o", *args) == 0
    record = json.loads((tmp_path / "o" / "log.jsonl").read_text().splitlines()[-1])
    assert "val_ppl" not in record
    tok = Tokenizer.from_pretrained(tmp_path / "o")
    hf = GPT2ForSequenceClassification.from_pretrained(tmp_path / "o").eval()
    with torch.no_grad():
        logits = torch.cat([hf(torch.tensor([tok.encode(t)])).logits for t in val])  # each text alone: no padding
    want = F.cross_entropy(logits, torch.tensor(labels)).item()
    print(f"logged val_loss {record['val_loss']:.6f}, recomputed over all {len(val)} val texts {want:.6f}")
    assert record["val_loss"] == pytest.approx(want, abs=1e-5)
    assert record["val_accuracy"] == pytest.approx((logits.argmax(-1) == torch.tensor(labels)).float().mean().item())
    capsys.readouterr()
    assert _run(base, tmp_path / "o2", *args, "--eval-iters", "5") == 2
    assert "eval_iters (--eval-iters) is how many val batches the lm task samples; task 'classify' scores every val" \
        in capsys.readouterr().err


def test_resume_refuses_another_tokenizer(base, tmp_path, capsys):
    """A crash audit: `--resume --tokenizer OTHER` (same vocabulary size and EOS id) trained on, with
    only a note that a setting changed, and saved the run's weights beside the other tokenizer."""
    other = Tokenizer.train(CORPUS[::-1], 300, progress=False)
    other.save_pretrained(tmp_path / "other")
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "full")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    before = (tmp_path / "o" / "training_state.pt").read_bytes()
    assert _run(base, tmp_path / "o", *args, "--resume", "--tokenizer", str(tmp_path / "other")) == 2
    assert (f"--resume: the tokenizer from {tmp_path / 'other'} is not the tokenizer of the model in {tmp_path / 'o'} "
            "(their vocab, merges differ)") in capsys.readouterr().err
    assert (tmp_path / "o" / "training_state.pt").read_bytes() == before
    assert _run(base, tmp_path / "o", *args, "--resume") == 0  # the run's own tokenizer: goes on
    # A new run is refused it too when --init holds a tokenizer of its own (a trainer's audit).
    assert _run(base, tmp_path / "o3", *args, "--max-iters", "2", "--tokenizer", str(tmp_path / "other")) == 2
    assert f"--tokenizer {tmp_path / 'other'} is not the tokenizer of the model in" in capsys.readouterr().err


def test_a_bare_resume_after_init_moved_says_to_pass_init(base, tmp_path, capsys):
    """An audit: a finetune resumed after its --init checkpoint moved said only that it "does not
    exist". Unlike `minigpt train`, finetune reads --init again (the tokenizer, the model the
    strategy wraps), so the message says how to go on, as it does for moved --data."""
    from minigpt.finetune import main

    shutil.copytree(base / "base", tmp_path / "start")
    args = ["--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "full", "--batch-size", "4",
            "--block-size", "32", "--warmup-iters", "1", "--eval-interval", "2"]
    assert main(["--init", str(tmp_path / "start"), "--out", str(tmp_path / "o"), "--max-iters", "2", *args]) == 0
    (tmp_path / "start").rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "o"), "--resume", "--max-iters", "3"]) == 2
    assert "; if the run's --init has moved, pass --init with where it is now" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "o"), "--resume", "--max-iters", "3", "--init", str(tmp_path / "moved")]) == 0


def test_resume_refuses_another_pooling(base, tmp_path, capsys):
    """A finetuner audit: `--resume --pooling mean` on a last-token classifier trained on, and its
    config.json then said mean pooling for a head that learned from the last token."""
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    assert _run(base, tmp_path / "o", *args, "--resume", "--pooling", "mean") == 2
    assert "is a --pooling last run, and a resumed run keeps its pooling" in capsys.readouterr().err
    assert _run(base, tmp_path / "o", *args, "--resume", "--pooling", "last") == 0  # the same value is fine


def test_an_lm_run_saved_when_the_head_options_defaulted_to_last_and_empty_still_resumes(base, tmp_path, capsys):
    """A review fix made --pooling and --head-hidden default to None (an --init classifier's own,
    else a new head's): an lm run saved before holds pooling "last" and head_hidden "" in its
    config, which --resume reads back; those are still no choice, not options refused for lm, and
    no setting that differs. Given for lm on purpose, any value is still refused."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0
    state = torch.load(out / "training_state.pt", weights_only=False)
    assert (state["config"]["pooling"], state["config"]["head_hidden"]) == (None, None)
    state["config"] |= {"pooling": "last", "head_hidden": ""}  # as saved then
    torch.save(state, out / "training_state.pt")
    capsys.readouterr()
    assert _run(base, out, "--resume", "--max-iters", "3") == 0
    assert "pooling" not in capsys.readouterr().err  # (no "settings that differ" warning)
    with pytest.raises(ValueError, match=r"^pooling='mean' \(--pooling\) applies to task 'classify' only"):
        FinetuneConfig(init="x", data="d", task="lm", pooling="mean")



def test_resume_at_the_step_a_run_stopped_writes_the_summary_of_a_run_that_long(base, tmp_path, monkeypatch):
    """Bug (an audit): `--resume --max-iters S` on a run stopped by SIGTERM at step S ran no step,
    so finetune_summary.json had no evaluation of step S (its val figures were stale, or absent).
    It now holds what a run of S steps writes."""
    import signal

    import minigpt.finetune

    args = ("--data", str(base / "corpus.txt"), "--eval-interval", "4", "--lr-decay-iters", "6")
    assert _run(base, tmp_path / "straight", *args, "--max-iters", "3") == 0
    calls, real = [], minigpt.finetune.sample_batch

    def sample(*a):  # the 3rd batch is step 3's (evaluations come at step 4): SIGTERM while it is drawn
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*a)

    monkeypatch.setattr(minigpt.finetune, "sample_batch", sample)
    assert _run(base, tmp_path / "stopped", *args, "--max-iters", "6") == 143
    monkeypatch.undo()
    assert torch.load(tmp_path / "stopped" / "training_state.pt", weights_only=True)["step"] == 3
    assert _run(base, tmp_path / "stopped", "--resume", "--max-iters", "3") == 0
    straight, stopped = (json.loads((tmp_path / d / "finetune_summary.json").read_text()) for d in ("straight", "stopped"))
    for key in ("steps", "loss", "val_loss", "val_bpb", "best_val_loss", "best_val_loss_step"):
        assert stopped[key] == straight[key], key
    assert stopped["steps"] == stopped["best_val_loss_step"] == 3


def test_classify_resume_refuses_other_examples(base, tmp_path, capsys):
    """The classify task reads its TSV again on every --resume: one edited since is refused by name."""
    data = tmp_path / "cls.tsv"
    data.write_text((base / "cls.tsv").read_text())
    args = ("--task", "classify", "--data", str(data), "--strategy", "frozen")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    data.write_text(data.read_text() + "the speech was good indeed\t1\n")
    capsys.readouterr()
    assert _run(base, tmp_path / "o", *args, "--resume") == 2
    assert f"is not the data the run in {tmp_path / 'o'} trained on (train examples: 36 then, 37 now)" in capsys.readouterr().err
    assert _run(base, tmp_path / "o", *args, "--resume", "--allow-new-data") == 0


def test_classify_resume_with_another_seed_names_the_seed_not_the_data(base, tmp_path, capsys):
    """Bug (an audit): with --max-examples, `--resume --seed 7` was refused as "--data ... is not
    the data the run trained on", though the file was the same: the seed picked another subset.
    The refusal now names the setting that chose other examples."""
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "frozen", "--max-examples", "20")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    capsys.readouterr()
    assert _run(base, tmp_path / "o", "--resume", "--seed", "7") == 2
    err = capsys.readouterr().err
    assert (f"the data differs from the data the run in {tmp_path / 'o'} trained on (train examples hash: " in err
            and f"--seed (1337 then, 7 now) chose other data from --data {base / 'cls.tsv'}; resume with the run's "
            "setting (drop the flag), or pass --allow-new-data" in err), err
    assert _run(base, tmp_path / "o", "--resume", "--max-examples", "30") == 2
    assert "--max-examples (20 then, 30 now) chose other data" in capsys.readouterr().err


def test_examples_fingerprint_counts_and_hashes_the_examples_whatever_their_order():
    from minigpt.classify_data import examples_fingerprint

    data = {"train": (["good", "bad", "fine"], [1, 0, 1]), "val": (["poor"], [0])}
    fingerprint = examples_fingerprint(data)
    assert (fingerprint["train examples"], fingerprint["val examples"]) == (3, 1)
    assert examples_fingerprint({**data, "train": (["fine", "good", "bad"], [1, 1, 0])}) == fingerprint  # --seed's order
    relabelled = examples_fingerprint({**data, "train": (["good", "bad", "fine"], [1, 0, 0])})
    assert [k for k in fingerprint if relabelled[k] != fingerprint[k]] == ["train examples hash"]


def test_gradient_checkpointing_fine_tunes_a_lora_classifier_to_the_same_weights(base, tmp_path):
    """LoRA adapters (with their dropout) inside recomputed blocks: the same run, bit for bit."""
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "lora", "--lora-dropout", "0.1", "--dropout", "0.1")
    assert _run(base, tmp_path / "plain", *args) == 0
    assert _run(base, tmp_path / "ckpt", *args, "--gradient-checkpointing") == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("plain", "ckpt"))
    assert b["config"]["gradient_checkpointing"] and not a["config"]["gradient_checkpointing"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_chunked_loss_fine_tunes_lora_to_the_same_weights_up_to_rounding(base, tmp_path, monkeypatch):
    """--chunked-loss in a LoRA language-model fine-tune (4 chunks of 40 positions a batch, the
    last short): the plain run's adapters, up to fp32 rounding. The chunked loss forms
    cross-entropy's gradient itself (softmax - onehot), which rounds differently from autograd's
    by ~1e-7; AdamW at lr 1e-2 normalises each gradient by its own size, so where a gradient is
    near 0 that difference grows: 2.4e-5 in an adapter entry of size ~0.1 after 4 steps."""
    import minigpt.chunked_loss

    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", 300 * 40)
    args = ("--data", str(base / "corpus.txt"), "--strategy", "lora", "--lora-dropout", "0.1", "--dropout", "0.1", "--lr", "1e-2")
    assert _run(base, tmp_path / "plain", *args) == 0
    assert _run(base, tmp_path / "chunked", *args, "--chunked-loss") == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True) for d in ("plain", "chunked"))
    assert b["config"]["chunked_loss"] and not a["config"]["chunked_loss"]
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-4), k
    assert any("lora" in k for k in a["model"])


def test_resume_from_another_directory_finds_relative_paths(base, tmp_path, monkeypatch, capsys):
    """--init, --data and --val-data typed relative to where the run started, and the tokenizer
    read from --init: a bare --resume run from another directory finds them all, and a path
    given again (relative to the new directory) is the same setting, not a changed one."""
    from minigpt.finetune import main

    monkeypatch.chdir(base)
    assert main(["--init", "base", "--task", "classify", "--data", "cls.tsv", "--val-data", "cls.tsv", "--out", str(tmp_path / "o"),
                 "--max-iters", "2", "--batch-size", "2", "--block-size", "16", "--warmup-iters", "1"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["--out", "o", "--resume", "--max-iters", "3", "--init", os.path.relpath(base / "base", tmp_path)]) == 0
    assert "(saved, now): {'max_iters': (2, 3)}\n" in capsys.readouterr().err  # and not 'init'
    assert torch.load(tmp_path / "o" / "training_state.pt", weights_only=True)["step"] == 3


def test_a_run_without_resume_refuses_an_out_dir_that_holds_one(base, tmp_path, capsys):
    """The lm task writes its tokens into OUT_DIR/data: that must not happen to another run's files."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "full") == 0
    before = {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    assert _run(base, out, "--data", str(tmp_path / "other.txt"), "--strategy", "full") == 2
    assert f"{out} already holds a checkpoint or a run (training_state.pt, log.jsonl" in capsys.readouterr().err
    assert before == {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}
    from minigpt.pretrain import main as train_main  # resumed with the wrong command: named, not "no meta.json in corpus.txt"

    assert train_main(["--out", str(out), "--resume"]) == 2
    assert f"{out} holds a run of `minigpt finetune`; continue it with `minigpt finetune --out {out} --resume`" in capsys.readouterr().err
    # Another strategy or task is refused by name: not "lora_dropout=... applies to strategy 'lora'
    # only" about an option the user never typed (the saved run's, merged in as defaults).
    from minigpt.finetune import main

    assert main(["--out", str(out), "--resume", "--strategy", "lora"]) == 2
    assert (f"the run in {out} is a --strategy full run, and a resumed run keeps its strategy (its weights and optimizer "
            "state are that run's): drop --strategy lora") in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "--task", "classify"]) == 2
    assert "is a --task lm run, and a resumed run keeps its task" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "--strategy", "full", "--max-iters", "5"]) == 0  # the same value is fine


def test_resume_with_a_new_weight_decay_or_betas_trains_with_them(base, tmp_path):
    """Fine-tuning resumes through train_loop's restore as `minigpt train` does: `--resume
    --weight-decay 0.5 --beta2 0.5` kept the saved 0.1 and (0.9, 0.95) in the optimizer (see
    test_train's test of the same name). 'partial' trains weights of both decay groups."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "partial") == 0
    from minigpt.finetune import main

    assert main(["--out", str(out), "--resume", "--max-iters", "6", "--weight-decay", "0.5", "--beta2", "0.5"]) == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert [(g["weight_decay"], g["betas"]) for g in state["optimizer"]["param_groups"]] == [(0.5, (0.9, 0.5)), (0.0, (0.9, 0.5))]
    assert state["step"] == 6 and all(s["step"] == 6 for s in state["optimizer"]["state"].values())  # the moments went on


def test_an_lm_run_killed_before_its_first_checkpoint_starts_again_with_resume(base, tmp_path, capsys):
    """A fine-tuning run killed before its first checkpoint leaves, besides its log.jsonl, the lm
    task's data/. --resume starts it again from step 0 as `minigpt train` does (see test_train's
    test of the same name): the log kept as log.lost.jsonl, and data/ tokenized again from --data
    (a data/ of another text's tokens is no run's of this --data, and is refused). A bare
    --resume says there is nothing to resume, not "--init MODEL_DIR is required"."""
    from minigpt.data import prepare
    from minigpt.finetune import main
    from minigpt.tokenizer import Tokenizer

    out = tmp_path / "o"
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    # Bug (a review): a `minigpt prepare` of other text in data/, beside a run's log (one that read it
    # as --data OUT/data, killed before its first checkpoint), counted as the run's own tokens: a
    # restart on text files wrote over it. data/ is a run's only when its meta.json names the run's tokens.
    prepare([tmp_path / "other.txt"], Tokenizer.from_pretrained(base / "base"), out / "data")
    (out / "log.jsonl").write_text(json.dumps({"step": 2, "loss": 5.0}) + "\n")
    theirs = _files(out / "data")
    for how in ("--resume", "--auto-resume"):
        assert _run(base, out, "--data", str(base / "corpus.txt"), how) == 2
        assert f"{out} holds data/ (the tokens of other text files, as its meta.json says)" in capsys.readouterr().err
        assert _files(out / "data") == theirs
    shutil.rmtree(out / "data")
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), out / "data")
    assert main(["--out", str(out), "--resume"]) == 2
    assert f"--resume: {out} holds no checkpoint: its run logged up to step 2" in capsys.readouterr().err
    assert _run(base, out, "--data", str(base / "corpus.txt")) == 2  # without --resume: what happened, and what to type
    assert "give the same command with --resume" in capsys.readouterr().err
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--resume") == 0
    assert "Starting it again from step 0 with the flags given" in capsys.readouterr().err
    assert json.loads((out / "log.lost.jsonl").read_text()) == {"step": 2, "loss": 5.0}
    assert json.loads((out / "data" / "meta.json").read_text())["sources"] == [str(base / "corpus.txt")]
    assert json.loads((out / "finetune_summary.json").read_text())["steps"] == 4
    # Killed before its first log record: data/ alone. A new run there was always fine; --resume now is too.
    early = tmp_path / "early"
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), early / "data")
    assert _run(base, early, "--data", str(base / "corpus.txt"), "--resume") == 0
    assert "(it left data/)" in capsys.readouterr().err


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_refuses_an_out_holding_a_data_or_adapter_folder_that_is_not_its_own(base, tmp_path, capsys):
    """Bug (an audit of --out folders): an OUT_DIR holding the user's own data/ (a val.txt they wrote,
    or a `minigpt prepare` of other text) or a PEFT adapter/ folder passed check_out_dir, and the lm
    task's tokens (prepare(overwrite=True)) or a LoRA run's adapters were written over them without a
    word; --auto-resume even took a bare data/ for the trace of a failed run. Each is refused now, the
    files kept byte for byte, with --auto-resume too; data/ holding this run's own tokens (the same
    text files and split) is fine, as before."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "val.txt").write_text("my own validation text\n")
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    prepared = tmp_path / "prepared"
    prepare([tmp_path / "other.txt"], Tokenizer.from_pretrained(base / "base"), prepared / "data")
    adapters = tmp_path / "adapters"
    (adapters / "adapter").mkdir(parents=True)
    (adapters / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    (adapters / "adapter" / "adapter_model.safetensors").write_bytes(b"their adapters")
    cases = [(mine, (), "data/ (files of its own, and no meta.json: no run's tokens)"),
             (prepared, (), "data/ (the tokens of other text files, as its meta.json says)"),
             (adapters, ("--strategy", "lora"), "adapter/, where each checkpoint of this LoRA run saves its adapters alone")]
    for out, flags, said in cases:
        before = _files(out)
        for how in ((), ("--auto-resume",)):
            capsys.readouterr()
            assert _run(base, out, "--data", str(base / "corpus.txt"), *flags, *how) == 2
            err = capsys.readouterr().err
            assert f"error: {out} holds {said}" in err and "Choose another --out, or move" in err, err
            assert _files(out) == before
        if out == prepared:
            assert f"; to train on those tokens, pass --data {prepared / 'data'} (prepared data is read where it is)" in err
    before = _files(prepared / "data")
    assert _run(base, prepared, "--data", str(prepared / "data"), "--max-iters", "1") == 0  # read where it is: untouched
    assert _files(prepared / "data") == before and (prepared / "training_state.pt").exists()
    same = tmp_path / "same"  # the tokens this run makes: written again, the same
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), same / "data")
    assert _run(base, same, "--data", str(base / "corpus.txt"), "--max-iters", "1") == 0


def test_a_prepared_data_folder_is_the_runs_own_only_with_its_text_split_and_tokenizer(base, tmp_path, capsys, monkeypatch):
    """Bug (a review): a `minigpt prepare` of the same text with another tokenizer passed for the
    run's own tokens and was written over (meta.json's tokenizer was not compared), and one that
    recorded its text file as typed (b/corpus.txt) was refused as "other text files", untrue: a
    source is compared as a resolved path, from the current directory."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    other_tokenizer = Tokenizer.train(CORPUS.upper(), 280)
    theirs = tmp_path / "theirs"
    prepare([base / "corpus.txt"], other_tokenizer, theirs / "data")
    before = _files(theirs)
    assert _run(base, theirs, "--data", str(base / "corpus.txt"), "--auto-resume") == 2
    err = capsys.readouterr().err
    assert f"{theirs} holds data/ (the tokens of another tokenizer)" in err, err
    assert "to train on those tokens" not in err and _files(theirs) == before  # (no ids of this model's)
    # Bug (a review): one of the model's own size (300, <|endoftext|> 299) passed, as only the size and
    # the eos id were compared: the tokenizer prepare saved in data/tokenizer is compared whole now.
    same_size = Tokenizer.train(CORPUS.upper(), 300)
    assert (same_size.vocab_size, same_size.eos_token_id) == (Tokenizer.from_pretrained(base / "base").vocab_size, 299)
    shutil.rmtree(theirs)
    prepare([base / "corpus.txt"], same_size, theirs / "data")
    before = _files(theirs)
    assert _run(base, theirs, "--data", str(base / "corpus.txt")) == 2
    assert "(the tokens of another tokenizer)" in capsys.readouterr().err
    assert _files(theirs) == before
    # (a review) a tokenizer/ that cannot be read (a file lost): a new run is refused, naming it; a
    # resume of the run's own tokens whose tokenizer/ was damaged tokenizes the text again
    (theirs / "data" / "tokenizer" / "merges.txt").unlink()
    before = _files(theirs)
    assert _run(base, theirs, "--data", str(base / "corpus.txt")) == 2
    assert "(the tokens of a tokenizer/ that cannot be read)" in capsys.readouterr().err
    assert _files(theirs) == before
    ours = tmp_path / "ours"
    assert _run(base, ours, "--data", str(base / "corpus.txt"), "--max-iters", "1") == 0
    (ours / "data" / "tokenizer" / "merges.txt").unlink()
    assert _run(base, ours, "--data", str(base / "corpus.txt"), "--resume", "--max-iters", "2") == 0
    assert (ours / "data" / "tokenizer" / "merges.txt").is_file()  # tokenized again, tokenizer/ whole
    monkeypatch.chdir(base)
    relative = tmp_path / "relative"
    prepare([Path("corpus.txt")], Tokenizer.from_pretrained(base / "base"), relative / "data")
    assert json.loads((relative / "data" / "meta.json").read_text())["sources"] == ["corpus.txt"]
    assert _run(base, relative, "--data", "corpus.txt", "--max-iters", "1") == 0


def test_a_resume_on_text_files_keeps_the_prepared_data_the_run_read_in_out_data(base, tmp_path, capsys):
    """Bug (a review): a run that read --data OUT/data (a `minigpt prepare` output, read where it
    is), resumed with text files and --allow-new-data, deleted that folder and wrote its new tokens
    there: the user's input, not the run's product. Refused now, before any tokenizing, data/ kept."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    out = tmp_path / "o"
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    prepare([tmp_path / "other.txt"], Tokenizer.from_pretrained(base / "base"), out / "data")
    assert _run(base, out, "--data", str(out / "data"), "--max-iters", "2") == 0
    before = _files(out / "data")
    capsys.readouterr()
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--resume", "--allow-new-data") == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'data'} holds the prepared data the run read (its --data), which tokens of --data's" in err, err
    assert _files(out / "data") == before and not (out / "data.new").exists()


@pytest.mark.parametrize("mended", ["data", "val-fraction"])
def test_a_restart_of_an_unsaved_lm_run_may_mend_its_data_or_val_fraction(base, tmp_path, capsys, mended):
    """Bug (a review): a run killed during its first checkpoint (no training_state.pt), restarted with
    --auto-resume and a corrected --data or --val-fraction, was refused: its data/, whose meta.json no
    longer matched the flags, was taken for the user's. It is the run's own, as the config in its
    log's opening record says, and is tokenized again from the flags given."""
    out, other = tmp_path / "o", tmp_path / "other.txt"
    other.write_text(CORPUS.replace("speak", "talk"))
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0
    for name in ("training_state.pt", "loss.png", "finetune_summary.json"):  # as a kill during that checkpoint leaves it
        (out / name).unlink()
    flags = ("--data", str(other)) if mended == "data" else ("--data", str(base / "corpus.txt"), "--val-fraction", "0.2")
    capsys.readouterr()
    assert _run(base, out, *flags, "--max-iters", "2", "--auto-resume") == 0, capsys.readouterr().err
    assert "Starting it again from step 0 with the flags given" in capsys.readouterr().err
    meta = json.loads((out / "data" / "meta.json").read_text())
    assert (meta["sources"], meta["val_fraction"]) == (([str(other)], 0.1) if mended == "data" else
                                                       ([str(base / "corpus.txt")], 0.2))
    assert (out / "log.lost.jsonl").exists() and (out / "training_state.pt").exists()


def test_a_data_folder_named_data_new_in_out_is_refused_and_kept(base, tmp_path, capsys):
    """Bug (a review): OUT/data.new is where the lm task writes its tokens before they become data/;
    a user's folder of that name given as --data (prepared data for lm, a TSV folder for classify)
    was renamed to OUT/data after the run, and any run (classify, sft too) deleted such a folder at
    its end. Such a --data is refused by name, and a run that tokenizes no text leaves data.new be."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    lm, cls = tmp_path / "lm", tmp_path / "cls"
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), lm / "data.new")
    (cls / "data.new").mkdir(parents=True)
    shutil.copy(base / "cls.tsv", cls / "data.new" / "train.tsv")
    for out, flags in ((lm, ()), (cls, ("--task", "classify", "--strategy", "full"))):
        before = _files(out)
        capsys.readouterr()
        assert _run(base, out, "--data", str(out / "data.new"), *flags) == 2
        err = capsys.readouterr().err
        assert f"--data {out / 'data.new'} is in data.new/ of --out {out}, the folder where" in err, err
        assert _files(out) == before
    shutil.copy(base / "cls.tsv", tmp_path / "train.tsv")  # data.new/ there is no input of this run: kept
    assert _run(base, cls, "--data", str(tmp_path / "train.tsv"), "--task", "classify", "--strategy", "full") == 0
    assert _files(cls / "data.new") == {"train.tsv": (base / "cls.tsv").read_bytes()} and not (cls / "data").exists()
    # (a review) a link inside data.new to a file elsewhere: resolved, it was no path in data.new, and the
    # run cleared data.new, link and all, then failed on the text file it no longer found
    linked = tmp_path / "linked"
    (linked / "data.new").mkdir(parents=True)
    (linked / "data.new" / "link.txt").symlink_to(base / "corpus.txt")
    assert _run(base, linked, "--data", str(linked / "data.new" / "link.txt")) == 2
    assert f"is in data.new/ of --out {linked}" in capsys.readouterr().err
    assert (linked / "data.new" / "link.txt").is_symlink()


@pytest.mark.parametrize("left", ["tokens", "killed tokenizing", "first checkpoint"])
def test_auto_resume_starts_again_a_fine_tuning_run_killed_before_its_first_checkpoint(base, tmp_path, capsys, left,
                                                                                      monkeypatch):
    """What a run killed before its first checkpoint leaves is its own, and --auto-resume starts it
    again: its tokens alone (killed before its first log record), what a tokenization killed midway
    leaves (data.new/, renamed to data/ only once whole: a review's kill -9 after the token files but
    before meta.json left a data/ that was then refused), or a LoRA run's log, tokens and the part of
    its first checkpoint it wrote, adapter/ included, which is set aside in checkpoint.lost/."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    out, flags = tmp_path / "o", ("--data", str(base / "corpus.txt"), "--strategy", "lora", "--auto-resume")
    if left == "killed tokenizing":  # late: the token files renamed in, no meta.json yet (a review's kill -9)
        import minigpt.finetune
        from minigpt.data import write_token_files

        def killed(paths, tokenizer, out_dir, val_fraction, **_):
            Path(out_dir).mkdir()
            write_token_files(paths, tokenizer, Path(out_dir), val_fraction, progress=False)
            tokenizer.save_pretrained(Path(out_dir) / "tokenizer")
            raise KeyboardInterrupt  # (as a kill -9 here: nothing after it runs)

        with monkeypatch.context() as m:
            m.setattr(minigpt.finetune, "prepare", killed)
            assert _run(base, out, *flags) != 0, capsys.readouterr().err
        assert not (out / "data").exists() and (out / "data.new" / "train.bin").exists()
    else:
        prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), out / "data")
    if left == "first checkpoint":
        (out / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
        for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
            shutil.copy(base / "base" / name, out / name)
        (out / "adapter").mkdir()
        (out / "adapter" / "adapter_config.json").write_text("{}")  # cut short by the kill
    capsys.readouterr()
    assert _run(base, out, *flags) == 0
    err = capsys.readouterr().err
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 4
    if left != "killed tokenizing":
        assert "Starting it again from step 0 with the flags given" in err
    if left == "first checkpoint":
        assert (out / "checkpoint.lost" / "adapter" / "adapter_config.json").read_text() == "{}"
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert not (out / "data.new").exists() and json.loads((out / "data" / "meta.json").read_text())["train_tokens"] > 0


def test_a_full_run_started_again_leaves_the_users_adapter_folder_where_it_is(base, tmp_path, capsys):
    """Bug (a review): starting again a run killed during its first checkpoint moved OUT/adapter/ into
    checkpoint.lost/ for every run, saying the run had saved it; a --strategy full run saves no
    adapters, so adapter/ there is the user's (check_out_dir accepts it), and it stays."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "full", "--max-iters", "2") == 0
    for name in ("training_state.pt", "loss.png", "finetune_summary.json"):  # as a kill during the first checkpoint leaves it
        (out / name).unlink()
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    capsys.readouterr()
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "full", "--max-iters", "2", "--resume") == 0
    err = capsys.readouterr().err
    assert "Starting it again from step 0" in err and "adapter/" not in err, err
    assert (out / "adapter" / "adapter_config.json").read_text() == '{"peft_type": "LORA", "r": 4}'
    assert not (out / "checkpoint.lost" / "adapter").exists() and (out / "checkpoint.lost" / "model.safetensors").exists()


def test_finetune_resume_names_the_file_and_the_setting_of_a_wrongly_typed_value_in_the_saved_config(base, tmp_path, capsys):
    """Bug (an audit of untrusted files): a training_state.pt whose saved config sets max_iters=4.5
    crashed `finetune --resume` with the config's TypeError, naming no file (see test_train's test of
    the same name). Now one line naming the file and the setting, exit 2."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    torch.save({**state, "config": {**state["config"], "max_iters": 4.5}}, out / "training_state.pt")
    capsys.readouterr()
    from minigpt.finetune import main

    assert main(["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'training_state.pt'} is damaged: its config's max_iters (4.5) is not an integer, " in err, err
    assert "Traceback" not in err
    # (a review) lora_targets=5 was "TypeError: 'int' object is not iterable", naming no setting
    torch.save({**state, "config": {**state["config"], "lora_targets": 5}}, out / "training_state.pt")
    assert main(["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'training_state.pt'} is damaged: its config's lora_targets (5) is not a string or a list of strings, " in err, err
    # (a reread) head_hidden=[256] was refused as an option of another task, not as the wrong type it is
    torch.save({**state, "config": {**state["config"], "head_hidden": [256]}}, out / "training_state.pt")
    assert main(["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is damaged: its config's head_hidden (a list of 1 entries) is not a string or None, " in err, err
    # (a review) a list is no str: only lora_targets, annotated so, takes one
    torch.save({**state, "config": {**state["config"], "task": ["lm"]}}, out / "training_state.pt")
    assert main(["--out", str(out), "--resume"]) == 2
    assert "is damaged: its config's task (a list of 1 entries) is not a string, " in capsys.readouterr().err
    # Names as a list, as the Python API takes lora_targets and saves it, are no damage: the run resumes.
    targets = state["config"]["lora_targets"].split(",")
    torch.save({**state, "config": {**state["config"], "lora_targets": targets}}, out / "training_state.pt")
    assert main(["--out", str(out), "--resume", "--max-iters", "3"]) == 0


def test_lm_resume_with_another_data_file_trains_on_it_only_when_told(base, tmp_path, capsys):
    """--data given again with --resume overrides the saved one, as every flag does: the lm task
    tokenizes the new text instead of going on with the old tokens in OUT_DIR/data. Other tokens
    than the run's are refused, keeping the run's, unless --allow-new-data; the same text moved
    elsewhere gives the same tokens, and resumes."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0
    before = {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    capsys.readouterr()
    assert _run(base, out, "--data", str(tmp_path / "other.txt"), "--resume") == 2
    err = capsys.readouterr().err
    assert re.search(rf"--data {tmp_path / 'other.txt'} is not the data the run in {out} trained on \(train.bin tokens: "
                     r"[\d,]+ then, [\d,]+ now; val.bin tokens: [\d,]+ then, [\d,]+ now\); resume with the run's data, or "
                     r"pass --allow-new-data \(allow_new_data=True in Python\) to go on with this data", err), err
    assert before == {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}  # the run's tokens kept
    assert not (out / "data.new").exists() and torch.load(out / "training_state.pt", weights_only=True)["step"] == 2
    (tmp_path / "moved.txt").write_text(CORPUS)  # the run's text, elsewhere: the same tokens
    assert _run(base, out, "--data", str(tmp_path / "moved.txt"), "--resume", "--max-iters", "3") == 0
    assert json.loads((out / "data" / "meta.json").read_text())["sources"] == [str(tmp_path / "moved.txt")]

    assert _run(base, out, "--data", str(tmp_path / "other.txt"), "--resume", "--max-iters", "4", "--allow-new-data") == 0
    assert "note: --allow-new-data: going on with data other than the run's (train.bin tokens:" in capsys.readouterr().err
    assert json.loads((out / "data" / "meta.json").read_text())["sources"] == [str(tmp_path / "other.txt")]
    assert "Something else" in (out / "data" / "val.txt").read_text()
    assert _run(base, out, "--resume", "--max-iters", "5") == 0  # the checkpoint records the new data: no flag needed now
    assert _run(base, out, "--resume", "--max-iters", "6", "--val-fraction", "0.5") == 2  # another split is other data
    err = capsys.readouterr().err
    assert "val.bin tokens" in err and "--val-fraction (0.1 then, 0.5 now) chose other data" in err
    assert _run(base, out, "--resume", "--max-iters", "6", "--val-fraction", "0.5", "--allow-new-data") == 0
    meta = json.loads((out / "data" / "meta.json").read_text())  # split again, not the old split kept
    assert meta["val_fraction"] == 0.5 and meta["val_tokens"] > 0.4 * (meta["train_tokens"] + meta["val_tokens"])


def test_auto_resume_starts_a_fine_tuning_run_then_continues_it(base, tmp_path):
    """--auto-resume is a flag of finetune too: the same command starts the run, then continues it."""
    args = ("--data", str(base / "corpus.txt"), "--auto-resume")
    assert _run(base, tmp_path / "o", *args, "--max-iters", "2") == 0
    assert _run(base, tmp_path / "o", *args, "--max-iters", "3") == 0
    assert torch.load(tmp_path / "o" / "training_state.pt", weights_only=True)["step"] == 3
    assert json.loads((tmp_path / "o" / "finetune_summary.json").read_text())["steps"] == 3


def test_an_lm_restart_loads_each_tokenizer_once_per_look_at_out(base, tmp_path, monkeypatch, capsys):
    """A review: whether OUT_DIR/data is the run's own (run_dir.py's `own_tokens`) loads two tokenizers,
    --init's and data/tokenizer (half a second each at GPT-2's size), and every caller asked it afresh:
    13 loads in an --auto-resume restart of a run killed before its first checkpoint. Each look at
    OUT_DIR now decides it once and passes the answer on, and none asks it of a saved run: the loads
    are parse_config's look (2), check_out_dir's under the lock (2), the run's tokenizer (1) and
    train_loop's look at the tokens just written (2). A saved run's restart (4 before) loads the run's
    tokenizer, the one saved in OUT_DIR and data/tokenizer (`_text_tokens` reuses the run's)."""
    import minigpt.tokenizer_files
    from minigpt.data import prepare

    out = tmp_path / "o"
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(base / "base"), out / "data")  # a run killed at step 1
    (out / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
    loads, read_hf = [], minigpt.tokenizer_files.read_hf
    monkeypatch.setattr(minigpt.tokenizer_files, "read_hf", lambda path: loads.append(path) or read_hf(path))

    def counted(*flags) -> int:
        loads.clear()
        assert _run(base, out, "--data", str(base / "corpus.txt"), "--auto-resume", "--max-iters", *flags) == 0
        return len(loads)

    assert counted("2") == 7
    assert "Starting it again from step 0" in capsys.readouterr().err and (out / "log.lost.jsonl").exists()
    assert counted("3") == 3
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 3


def test_a_refused_lm_resume_with_allow_new_data_keeps_the_runs_tokens(base, tmp_path, capsys):
    """Bug (an audit): `--resume --allow-new-data --data OTHER` refused later (by --max-iters below
    the saved step, or a LoRA rank the saved adapters do not fit: now refused before) had already tokenized OTHER into
    OUT_DIR/data, over the run's tokens. The new tokens now wait in data.new, and replace data/
    when the resumed run saves a checkpoint on them, so data/ holds what training_state.pt records."""
    from minigpt.data import data_fingerprint, load_splits, read_meta

    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0
    before = {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    for refused, message in ((("--max-iters", "1"), "--max-iters 1 is below the step the saved run reached (2)"),
                             (("--max-iters", "3", "--lora-rank", "4"), "is a --lora-rank 8 run, and a resumed run keeps its lora_rank")):
        assert _run(base, out, "--data", str(tmp_path / "other.txt"), "--resume", "--allow-new-data", *refused) == 2
        refusal = capsys.readouterr()
        assert message in refusal.err and "going on with data other than the run's" not in refusal.out
        assert before == {f.name: f.read_bytes() for f in (out / "data").iterdir() if f.is_file()}
        assert not (out / "data.new").exists()
    assert _run(base, out, "--data", str(tmp_path / "other.txt"), "--resume", "--allow-new-data", "--max-iters", "3") == 0
    meta = read_meta(out / "data")
    assert meta["sources"] == [str(tmp_path / "other.txt")] and not (out / "data.new").exists()
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["data"] == data_fingerprint(load_splits(out / "data", meta, meta["vocab_size"]), meta["vocab_size"])


@pytest.mark.parametrize("task,strategy", [("classify", "partial"), ("lm", "lora")])
def test_ddp_two_processes_match_one(base, tmp_path, task, strategy):
    """torchrun with 2 gloo processes and grad_accum=4 ends where one process with grad_accum=4
    does, with frozen weights in the model (DDP must not wait for their gradients). 6 val texts
    in batches of 2 make 3 accuracy batches: rank 0 scores two, rank 1 one. lm/lora also checks
    that the adapters' initial weights come from --seed, not from each process's own RNG."""
    data = base / ("cls.tsv" if task == "classify" else "corpus.txt")
    # lr 1e-3: a gradient near 0 (|g| ~ Adam's eps) turns summation-order rounding (~1e-9) into
    # a visible first Adam step; measured here: at most ~2e-6 at this lr.
    flags = ["--init", str(base / "base"), "--task", task, "--data", str(data), "--strategy", strategy, "--val-fraction", "0.15",
             "--max-iters", "4", "--eval-interval", "2", "--batch-size", "2", "--grad-accum", "4",
             "--block-size", "32", "--warmup-iters", "1", "--lr", "1e-3", "--dropout", "0.1", "--device", "cpu"]
    flags += ["--eval-iters", "3"] if task == "lm" else []  # (classify scores every val example)
    proc = torchrun("finetune", *flags, "--out", str(tmp_path / "ddp"))
    assert len([line for line in proc.stdout.splitlines() if line.startswith("{")]) == 1, "only rank 0 prints the result"
    from minigpt.finetune import main

    assert main([*flags, "--out", str(tmp_path / "one")]) == 0
    a, b = (torch.load(tmp_path / d / "training_state.pt", weights_only=True)["model"] for d in ("ddp", "one"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{task}/{strategy}: DDP(2) vs 1 process: max |Δw| = {diff:.2e}")
    assert diff < 1e-5
    # Rank 0 wrote the summary from its complete log: the same evaluations as one process.
    ddp, one = (json.loads((tmp_path / d / "finetune_summary.json").read_text()) for d in ("ddp", "one"))
    for key in ("loss", "val_loss", "val_accuracy", "best_val_loss", "best_val_accuracy"):
        assert ddp.get(key) == pytest.approx(one.get(key), abs=1e-5), key
    assert (ddp["steps"], ddp["best_val_loss_step"]) == (one["steps"], one["best_val_loss_step"])


def test_an_lm_error_under_torchrun_is_said_once(base, tmp_path):
    """Bug (an audit): when only rank 0 failed (a missing --data, which rank 0 alone read when it
    tokenized; other data on --resume, which rank 0 alone checks), rank 1, waiting for the tokens,
    printed a ~30-line gloo traceback after the real message. Now every process checks --data,
    and rank 0 tells the others how its tokenizing went."""
    flags = ["--init", str(base / "base"), "--strategy", "lora", "--max-iters", "2", "--eval-iters", "2", "--batch-size", "2",
             "--grad-accum", "2", "--block-size", "32", "--device", "cpu"]
    one_error(torchrun("finetune", *flags, "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o"), fails=True),
              f"--data {tmp_path / 'none.txt'} does not exist")
    torchrun("finetune", *flags, "--data", str(base / "corpus.txt"), "--out", str(tmp_path / "o"))
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    one_error(torchrun("finetune", "--out", str(tmp_path / "o"), "--resume", "--max-iters", "3", "--data",
                       str(tmp_path / "other.txt"), fails=True), "is not the data the run in")


def test_grad_accum_must_divide_among_the_processes(base, tmp_path, monkeypatch, capsys):
    """Checked before joining the process group or preparing data, so torchrun is not needed here."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), "--grad-accum", "3") == 2
    assert "grad_accum (3) must be a multiple of the number of processes (2)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (("--data", "corpus.txt", "--strategy", "frozen"), "'frozen' trains only a new head, and the lm task has none"),
    (("--task", "classify", "--data", "cls.tsv", "--strategy", "frozen", "--gradient-checkpointing"),
     r"gradient_checkpointing \(--gradient-checkpointing\) recomputes the blocks that train; strategy 'frozen' trains only the new head"),
    (("--task", "classify", "--data", "cls.tsv", "--chunked-loss"),
     r"chunked_loss=True \(--chunked-loss\) applies to task 'lm' or 'sft' only; task 'classify' would ignore it"),
    (("--task", "classify", "--data", "cls.tsv", "--num-labels", "1"), r"num_labels must be at least 2 .*got 1"),
    (("--task", "classify", "--data", "cls.tsv", "--num-labels", "0"), r"num_labels must be at least 2 .*got 0"),  # was read as unset
    (("--task", "classify", "--data", "bad.tsv"), "no tab"),
    (("--task", "classify", "--data", "empty.tsv"), "holds no examples"),
    (("--task", "classify", "--data", "zeros.tsv"), "every training example is labelled 0: a classifier needs 2 classes or more"),
    # Labels 1 and 2 (Yelp's numbering) made a 3-class model whose class 0 never occurs (a finetuner audit).
    (("--task", "classify", "--data", "one_two.tsv"), r"no training example is labelled 0: labels are class ids 0 to "
                                                      r"num_labels - 1, read here as 3 classes .* or pass --num-labels"),
    # Many unseen: the first five, then how many more (a review: it listed five, and said nothing of the rest).
    (("--task", "classify", "--data", "zero_nine.tsv"), r"no training example is labelled 1, 2, 3, 4, 5, \.\.\. and 3 more: "
                                                        r"labels are class ids 0 to num_labels - 1, read here as 10 classes"),
    (("--task", "translate", "--data", "corpus.txt"), "unknown task 'translate'"),
    (("--task", "classify", "--data", "cls.tsv", "--max-examples", "0"), r"max_examples must be >= 1 \(leave it unset for all examples\), got 0"),
    (("--task", "classify", "--data", "cls.tsv", "--max-val-examples", "-3"), "max_val_examples must be >= 1"),
    # GPT-2's tokenizer beside a model trained with a 300-token one: its ids mean other tokens.
    # (It named "the data's tokenizer" and said to tokenize again, `minigpt train`'s remedy: here --tokenizer is the one.)
    (("--data", "corpus.txt", "--tokenizer", str(GPT2_DIR)), r"has a 300-token vocabulary \(EOS = 299\), but "
                                                             r"--tokenizer \S+ has 50257 \(EOS = 50256\).*"
                                                             r"Drop --tokenizer \(the tokenizer is then read from --init\)"),
    (("--data", "corpus.txt", "--strategy", "partial", "--n-trainable-blocks", "3"), r"must be an integer in \[0, 2\]"),
    (("--task", "classify", "--data", "cls.tsv", "--head-hidden", "256,x"), "head_hidden must be comma-separated integer widths"),
    (("--data", "corpus.txt", "--lr", "nan"), "lr must be a finite number, got nan"),
    # alpha / r scales the update and B's gradient: at 0 nothing trains (the weights stayed --init's).
    (("--data", "corpus.txt", "--lora-alpha", "0"), r"LoRA alpha \(--lora-alpha\) must be a finite number > 0, got 0.0"),
    (("--data", "corpus.txt", "--init", "no-such-dir"), r"--init no-such-dir does not exist \(config.json \+ model.safetensors, "
                                                         r"as save_pretrained and minigpt train write\), or a GPT-2 size by name"),
    # (not "tokenizer directory ... holds neither vocab.json ...", nor "checkpoint directory does not exist": an audit)
    (("--data", "corpus.txt", "--init", "corpus.txt"), r"--init \S+corpus.txt is a file; it names a checkpoint directory"),
    (("--data", "corpus.txt", "--init", "."), r"--init \S+ holds no config.json: it is no checkpoint directory"),
    (("--data", "."), r"--data \S+ is a directory without meta.json, so not prepared data \(train.bin, val.bin, meta.json, as "
                      r"`minigpt prepare` writes\): the lm task reads text files \(name them\) or such a directory"),
    # (it was a bare "[Errno 20] Not a directory", an audit)
    (("--data", "corpus.txt", "--out", "corpus.txt/run"), r"--out \S+corpus.txt/run is below \S+corpus.txt, which is a file"),
])
def test_cli_bad_input_is_a_clear_error(base, tmp_path, capsys, args, message):
    (base / "bad.tsv").write_text("good\t1\nno label here\n")
    (base / "empty.tsv").write_text("sentence\tlabel\n")
    (base / "zeros.tsv").write_text("bad\t0\n" * 20)
    (base / "one_two.tsv").write_text("bad\t1\ngood\t2\n" * 10)
    (base / "zero_nine.tsv").write_text("bad\t0\ngood\t9\n" * 10)
    args = tuple(str(base / a) if a.partition("/")[0].endswith((".txt", ".tsv")) else a for a in args)
    assert _run(base, tmp_path / "o", *args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_lm_val_split_of_exactly_block_size_tokens_is_refused_before_training(base, tmp_path, capsys):
    """Mutant R8-43: the lm task checked its splits for block_size tokens, not block_size + 1 (one
    window and the token after it): a val split of exactly block_size tokens passed, and the first
    evaluation's batch sampling crashed with a traceback instead of exit 2 naming the file."""
    from minigpt.data import prepare
    from minigpt.tokenizer import Tokenizer

    text = tmp_path / "short.txt"
    text.write_text("the speech was good indeed, and the play was fine. " * 4)
    val_tokens = prepare([text], Tokenizer.from_pretrained(base / "base"), tmp_path / "probe")["val_tokens"]
    assert 2 <= val_tokens <= 32
    code = _run(base, tmp_path / "o", "--data", str(text), "--strategy", "full", "--block-size", str(val_tokens))
    err = capsys.readouterr().err
    assert code == 2 and f"holds {val_tokens} tokens; need at least {val_tokens + 1}" in err and "Traceback" not in err


def test_init_from_a_classifier_is_refused_by_name(base, tmp_path, capsys):
    from minigpt.tokenizer import Tokenizer

    GPTClassifier(GPT.from_pretrained(base / "base"), num_labels=2).save_pretrained(tmp_path / "clf")
    Tokenizer.from_pretrained(base / "base").save_pretrained(tmp_path / "clf")  # as finetune --task classify writes it
    assert _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), "--init", str(tmp_path / "clf")) == 2
    assert f"--init {tmp_path / 'clf'} is a classifier (GPT2ForSequenceClassification); training starts from a language model" \
        in capsys.readouterr().err


def test_best_evaluations_name_the_step_of_each_best():
    records = [
        {"step": 10, "loss": 0.9},  # a train record: not an evaluation
        {"step": 20, "val_loss": 0.7, "val_accuracy": 0.6},
        {"step": 30, "val_loss": 0.5, "val_accuracy": 0.7},
        {"step": 40, "val_loss": 0.6, "val_accuracy": 0.8},  # accuracy still rising while the loss went up
        {"step": 50, "val_loss": 0.5, "val_accuracy": 0.8},  # ties: the earliest step counts
    ]
    assert best_evaluations(records) == {"best_val_loss": 0.5, "best_val_loss_step": 30,
                                         "best_val_accuracy": 0.8, "best_val_accuracy_step": 40}
    assert best_evaluations([{"step": 5, "val_loss": 1.0}]) == {"best_val_loss": 1.0, "best_val_loss_step": 5}  # lm: no accuracy
    assert best_evaluations([{"step": 5, "loss": 1.0}]) == {}


def test_the_model_shape_is_not_a_finetune_flag(base, tmp_path, capsys):
    """The shape comes from --init: train's --preset and --n-* are neither shown nor accepted."""
    from minigpt.finetune import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--init" in text and "--lr" in text and "--block-size" in text  # train's other flags are shared
    for shape in ("--preset", "--n-layer", "--n-head", "--n-embd", "--n-positions"):
        assert shape not in text
    # Given anyway, each says in one line why it is refused (and --preset which presets exist, and where).
    for flag, value, reason in (("--preset", "gpt3", "fine-tuning takes the model's shape from --init, so it has no presets "
                                 "(they make fresh models for `minigpt train`: gpt2, gpt2-medium, gpt2-large, gpt2-xl, gpt2-tiny, gpt2-mini)"),
                                ("--n-layer", "3", "fine-tuning takes the model's shape from the --init checkpoint, which fixes it"),
                                ("--n-positions", "64", "fine-tuning takes the model's shape from the --init checkpoint, which fixes it")):
        with pytest.raises(SystemExit) as exit_:
            _run(base, tmp_path / "o", "--data", str(base / "corpus.txt"), flag, value)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(f"minigpt finetune: error: {flag} {value}: {reason}") and err.count("\n") == 1, err
    with pytest.raises(TypeError, match="n_layer"):
        FinetuneConfig(init="x", n_layer=4)


def data_cfg(data, **kw):
    """The fields load_classification_data reads from a FinetuneConfig."""
    return SimpleNamespace(**{**dict(data=str(data), val_data=None, seed=0, val_fraction=VAL_FRACTION_DEFAULT,
                                     max_examples=None, max_val_examples=None), **kw})


def test_held_out_examples_are_not_trained_on(tmp_path):
    """Guards against the --val-fraction split keeping the held-out examples in the training set:
    validation accuracy would then be measured on examples the model trained on (an inflated
    score, and `best/` picked on it), with no error anywhere."""
    lines = [f"example number {i}\t{i % 3}" for i in range(50)]
    (tmp_path / "all.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    for fraction in (VAL_FRACTION_DEFAULT, 0.3):
        split = load_classification_data(data_cfg(tmp_path / "all.tsv", val_fraction=fraction))
        train, val = split["train"][0], split["val"][0]
        assert len(val) == int(50 * fraction) and len(train) == 50 - len(val)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(line.split("\t")[0] for line in lines)
        # labels still follow their texts through the shuffles
        for texts, labels in split.values():
            assert all(int(t.split()[-1]) % 3 == y for t, y in zip(texts, labels))


def test_too_few_examples_to_hold_out_a_validation_set_is_refused_by_name(tmp_path):
    """Mutant R8-37: the `n_val == 0` check was lost (`n_val < 0`): a file too small for --val-fraction
    to hold out even one example gave an empty validation set, and the run failed only at its first
    evaluation (accuracy over no examples), not at once with what to do."""
    (tmp_path / "few.tsv").write_text("a\t0\nb\t1\nc\t0\n")
    with pytest.raises(ValueError, match=r"few.tsv has 3 example\(s\): too few to hold out 10% for validation; pass --val-data"):
        load_classification_data(data_cfg(tmp_path / "few.tsv"))
    split = load_classification_data(data_cfg(tmp_path / "few.tsv", val_fraction=0.4))  # int(3 * 0.4) = 1 is enough
    assert (len(split["train"][0]), len(split["val"][0])) == (2, 1)


def test_max_val_examples_caps_the_validation_set_and_max_examples_the_training_set(tmp_path):
    """Mutant R8-46: the validation subset was cut to --max-examples instead of --max-val-examples:
    each flag caps its own split, and leaving one unset leaves that split whole."""
    (tmp_path / "train.tsv").write_text("".join(f"train {i}\t{i % 2}\n" for i in range(40)))
    (tmp_path / "dev.tsv").write_text("".join(f"dev {i}\t{i % 2}\n" for i in range(30)))
    sizes = lambda split: (len(split["train"][0]), len(split["val"][0]))  # noqa: E731
    assert sizes(load_classification_data(data_cfg(tmp_path, max_examples=10, max_val_examples=5))) == (10, 5)
    assert sizes(load_classification_data(data_cfg(tmp_path, max_examples=10))) == (10, 30)
    assert sizes(load_classification_data(data_cfg(tmp_path, max_val_examples=5))) == (40, 5)


def test_a_subset_of_a_file_sorted_by_label_mixes_labels(tmp_path):
    """Guards against --max-examples taking the file's first lines instead of a seeded shuffle:
    on a file sorted by label (SST-2 style dumps) the subset would hold one class only."""
    lines = [f"text {i}\t{0 if i < 100 else 1}" for i in range(200)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "dev.tsv").write_text("a\t0\nb\t1\n")
    split = load_classification_data(data_cfg(tmp_path, max_examples=20))
    assert len(split["train"][0]) == 20 and set(split["train"][1]) == {0, 1}
    again = load_classification_data(data_cfg(tmp_path, max_examples=20))
    assert again["train"] == split["train"]  # seeded: the same subset every run


@torch.no_grad()
def test_accuracy_restores_the_mode_it_found_and_scores_without_dropout():
    """Guards against score_examples() switching the model to train mode on exit whatever mode it was in:
    a caller that evaluates an eval-mode classifier (after training, or between predictions) would
    be left with dropout on, and its next logits would be random."""
    torch.manual_seed(0)
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=97, bos_token_id=0, eos_token_id=0, dropout=0.5)), 3)
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    labels = [0, 1, 2]
    clf.eval()
    first = score_examples(clf, ids, labels, pad_id=0, batch_size=2)["accuracy"]
    assert not clf.training
    clf.train()
    assert score_examples(clf, ids, labels, pad_id=0, batch_size=2)["accuracy"] == first  # scored in eval mode: no dropout
    assert clf.training


def test_lm_summary_holds_the_last_evaluations_figures_bits_per_byte_included(base, tmp_path):
    """Bug guarded: finetune_summary.json must carry the last evaluation's figures as log.jsonl
    has them: loss, val_loss and, for the lm task, val_bpb (the tokenizer-independent figure
    compare_strategies tabulates); a summary that dropped one left its column empty."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "full") == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if "val_loss" in r][-1]
    for key in ("val_loss", "val_ppl", "val_bpb"):  # (val_ppl: the step lines showed it, the summary did not; an audit)
        assert summary[key] == last_eval[key], key
    assert summary["loss"] == [r for r in records if "loss" in r][-1]["loss"]


def test_finetune_refused_as_in_use_touches_nothing_and_a_moved_data_is_named(base, tmp_path, capsys, another_run_holds):
    """`minigpt finetune` holds OUT_DIR from its first look (conftest's another_run_holds): a
    second one there is refused before it sets a live run's log aside or tokenizes into data/. And
    a --resume whose saved --data is gone says to pass --data with where it is now."""
    out = tmp_path / "o"
    out.mkdir()
    log = json.dumps({"step": 2, "loss": 5.0}) + "\n"
    (out / "log.jsonl").write_text(log)
    with another_run_holds(out):
        assert _run(base, out, "--data", str(base / "corpus.txt"), "--resume") == 2
        assert "is in use by another run, still going" in capsys.readouterr().err
        assert (out / "log.jsonl").read_text() == log and not (out / "data").exists()
        assert not list(out.glob("log.lost*.jsonl"))
    text = tmp_path / "corpus.txt"
    text.write_text((base / "corpus.txt").read_text())
    assert _run(base, tmp_path / "run", "--data", str(text)) == 0
    text.unlink()
    capsys.readouterr()
    assert _run(base, tmp_path / "run", "--resume", "--max-iters", "6") == 2
    assert "; if the run's data has moved, pass --data with where it is now" in capsys.readouterr().err


def test_resume_that_measures_val_loss_otherwise_starts_best_over(base, tmp_path, capsys):
    """An audit: `--resume --eval-iters 3` on a run that measured its val loss over 2 batches kept
    that best val loss, only warning that settings differ; the losses are not comparable, and a
    lucky old figure could keep best/ from ever following the run. Now best/ starts over, with a
    note naming the settings; the same settings keep it. The saved best is made unbeatable here."""
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--max-iters", "2") == 0

    def unbeatable() -> None:
        state = torch.load(out / "training_state.pt", weights_only=False)
        state["best_val_loss"] = -1.0
        torch.save(state, out / "training_state.pt")

    def best_step() -> int:
        return json.loads((out / "best" / "metrics.json").read_text())["step"]

    unbeatable()
    capsys.readouterr()
    assert _run(base, out, "--resume", "--max-iters", "4") == 0  # measured as before: the best stands
    assert best_step() == 2 and "not comparable" not in capsys.readouterr().out
    unbeatable()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (out / "log.jsonl").write_text("".join(json.dumps({**r, "val_loss": -1.0} if "val_loss" in r else r) + "\n" for r in log))
    assert _run(base, out, "--resume", "--max-iters", "6", "--eval-iters", "3", "--seed", "5") == 0
    assert ("note: val loss is measured otherwise than the run's (--eval-iters 2 → 3, --seed 1337 → 5), so its best "
            "val loss (-1) is not comparable: best/ follows this val loss from here") in capsys.readouterr().err
    assert best_step() == 6
    # The summary's best is best/'s (a numbers audit: it took the log's unbeatable -1 from before the note).
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert (summary["best_val_loss_step"], summary["best_val_loss"]) == (6, json.loads((out / "best" / "metrics.json").read_text())["val_loss"])
    # A resume that starts best/ over and dies before its next checkpoint leaves a mark that a resume
    # from the same checkpoint, not starting over, drops (a reviewer's catch: the summary then named
    # a later step than best/'s).
    import minigpt.train

    unbeatable()  # and the log's figure for best/'s step 6 with it
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (out / "log.jsonl").write_text("".join(json.dumps({**r, "val_loss": -1.0} if r["step"] == 6 and "val_loss" in r else r)
                                           + "\n" for r in log))
    real = minigpt.train.train_and_log
    minigpt.train.train_and_log = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed"))
    try:
        with pytest.raises(RuntimeError, match="killed"):
            _run(base, out, "--resume", "--max-iters", "8", "--eval-iters", "4")
    finally:
        minigpt.train.train_and_log = real
    assert _run(base, out, "--resume", "--max-iters", "8") == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["best_val_loss_step"] == best_step() == 6
    # Which settings count (a mutation audit): the lm task draws its val windows with all four;
    # classify scores every val example, so only where a text is cut matters.
    from minigpt.resume import val_settings
    assert set(val_settings(SimpleNamespace(task="lm"))) == {"block_size", "batch_size", "eval_iters", "seed"}
    assert val_settings(SimpleNamespace(task="classify")) == ("block_size",)


def test_truncate_log_drops_a_stale_best_reset_at_the_checkpoints_step(tmp_path):
    """A resume that marked best_reset at the checkpoint's step S and died before its next
    checkpoint leaves a stale mark: the next resume from S drops it (and every record past S),
    keeping the evaluations at S (a mutation audit: keeping it passed every test)."""
    from minigpt.run_log import append_log, read_log, truncate_log

    for r in ({"step": 4, "loss": 1.0}, {"step": 4, "val_loss": 2.0}, {"step": 4, "best_reset": True},
              {"step": 5, "loss": 0.9}):
        append_log(tmp_path, r)
    truncate_log(tmp_path, 4)
    assert read_log(tmp_path) == [{"step": 4, "loss": 1.0}, {"step": 4, "val_loss": 2.0}]


def test_best_evaluations_count_only_those_since_the_last_best_reset():
    records = [{"step": 2, "val_loss": 1.0}, {"step": 2, "best_reset": True}, {"step": 4, "val_loss": 0.5},
               {"step": 4, "best_reset": True}, {"step": 6, "val_loss": 0.8}]
    assert best_evaluations(records) == {"best_val_loss": 0.8, "best_val_loss_step": 6}


def test_a_label_one_past_the_last_class_is_refused_by_name(tmp_path):
    """Labels are 0..num_labels-1: a dev label of 2 in a 2-class task (or 3 with --num-labels 3) is
    refused, naming the split, not left to fail in cross_entropy at the first evaluation."""
    import minigpt.finetune as finetune

    (tmp_path / "train.tsv").write_text("a\t0\nb\t1\n")
    (tmp_path / "dev.tsv").write_text("c\t1\nd\t2\n")
    with pytest.raises(ValueError, match=r"val label 2 is out of range: with num_labels=2"):
        finetune._classify_task(data_cfg(tmp_path, num_labels=None), None, None, None, False)
    (tmp_path / "train.tsv").write_text("a\t0\nb\t3\n")
    (tmp_path / "dev.tsv").write_text("c\t1\n")
    with pytest.raises(ValueError, match=r"train label 3 is out of range: with num_labels=3"):
        finetune._classify_task(data_cfg(tmp_path, num_labels=3), None, None, None, False)


def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ours, theirs = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_lm_reads_several_text_files_joined_as_prepare_joins_them(base, tmp_path, capsys):
    """An audit: `--data a.txt b.txt` failed with "unrecognized arguments: b.txt" (the lm task read
    one text file). Several are tokenized as `minigpt prepare FILES` tokenizes them (an
    end-of-document token after each, the last --val-fraction of each held out), and a resumed run
    checks them as it checks one: the same files go on, the same files in another order are other
    data; a prepared DATA_DIR is --data alone. The Python API takes one path (a str or a Path) or a
    list or tuple of them."""
    from minigpt.data import prepare

    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(CORPUS)
    second.write_text("All:\nSpeak, speak. First Citizen:\nYou are all resolved rather to die than to famish?\n" * 20)
    out = tmp_path / "o"
    assert _run(base, out, "--data", str(first), str(second), "--max-iters", "2") == 0
    assert json.loads((out / "data" / "meta.json").read_text())["sources"] == [str(first), str(second)]
    prepare([first, second], Tokenizer.from_pretrained(base / "base"), tmp_path / "probe")
    for name in ("train.bin", "val.bin", "val.txt"):
        assert (out / "data" / name).read_bytes() == (tmp_path / "probe" / name).read_bytes(), name
    assert _run(base, out, "--data", str(first), str(second), "--resume", "--max-iters", "3") == 0
    capsys.readouterr()
    assert _run(base, out, "--data", str(second), str(first), "--resume", "--max-iters", "4") == 2
    assert f"--data {second} {first} is not the data the run in {out} trained on (train.bin hash:" in capsys.readouterr().err
    prepare([first], Tokenizer.from_pretrained(base / "base"), tmp_path / "prepared")  # read alone, as it was prepared
    assert _run(base, tmp_path / "o2", "--data", str(tmp_path / "prepared"), str(second)) == 2
    assert f"--data {tmp_path / 'prepared'} is prepared data (it holds meta.json), which is read alone" in capsys.readouterr().err
    init = str(base / "base")
    assert FinetuneConfig(init=init, data=first).data == FinetuneConfig(init=init, data=[str(first)]).data == str(first)
    assert FinetuneConfig(init=init, data=[first, second]).data == (str(first), str(second))
    with pytest.raises(ValueError, match=re.escape("--data (data= in Python) names 2 paths, but task 'classify' reads one "
                                                   "TSV file, or one directory of train.tsv and an optional dev.tsv")):
        FinetuneConfig(init=init, task="classify", data=(first, second))


def test_finetune_config_keeps_every_path_as_a_str(tmp_path):
    """A typing audit: FinetuneConfig(out=Path(...)) kept the PosixPath (and a missing --tokenizer
    or --init given as a Path stayed one) while data became str. Every path is a str now."""
    cfg = FinetuneConfig(init=tmp_path, data=tmp_path / "a.txt", out=tmp_path / "o", tokenizer=tmp_path / "missing")
    assert (cfg.init, cfg.data, cfg.out, cfg.tokenizer) == \
        (str(tmp_path), str(tmp_path / "a.txt"), str(tmp_path / "o"), str(tmp_path / "missing"))


def test_finetune_config_refuses_a_data_that_is_not_a_path():
    """A review: data=3 failed on "'int' object is not iterable", and data=[Path("a"), 3] on
    os.path.exists(3), which reads an int as an open file's descriptor. Each is refused by name,
    as TrainConfig refuses a data that is not a path."""
    with pytest.raises(TypeError, match=r"^data must be a path \(a str or a pathlib.Path\) or a list of them, got 3$"):
        FinetuneConfig(init="gpt2", data=3)
    with pytest.raises(TypeError, match=r"^data\[1\] must be a path \(a str or a pathlib.Path\), got 3$"):
        FinetuneConfig(init="gpt2", data=[Path("a"), 3])
    with pytest.raises(TypeError, match=r"^data must be a path .* got b'a.txt'$"):
        FinetuneConfig(init="gpt2", data=b"a.txt")


def test_lm_trains_on_a_prepared_data_dir_made_with_the_models_tokenizer(base, tmp_path, capsys):
    """An audit: a DATA_DIR written by `minigpt prepare` was refused as --data, by an error that
    pointed at --task classify. It is read where it is, as `minigpt train --init` reads one (no
    OUT_DIR/data): the same tokens train to the same weights as the text they came from. Its
    tokenizer must be the model's; a --val-fraction it would ignore is refused; a resumed run
    refuses it once it holds other tokens."""
    from minigpt.data import prepare

    tokenizer = Tokenizer.from_pretrained(base / "base")
    prepared = tmp_path / "prepared"
    prepare([base / "corpus.txt"], tokenizer, prepared)
    out, text_run = tmp_path / "o", tmp_path / "text"
    assert _run(base, out, "--data", str(prepared), "--strategy", "full") == 0
    assert _run(base, text_run, "--data", str(base / "corpus.txt"), "--strategy", "full") == 0
    assert not (out / "data").exists() and _same_weights(out, text_run)
    assert _run(base, out, "--resume", "--max-iters", "5") == 0  # the saved --data: the prepared folder
    capsys.readouterr()
    (tmp_path / "other.txt").write_text("Something else entirely.\n" * 40)
    prepare([tmp_path / "other.txt"], tokenizer, prepared, overwrite=True)
    assert _run(base, out, "--resume", "--max-iters", "6") == 2
    assert f"--data {prepared} is not the data the run in {out} trained on" in capsys.readouterr().err

    assert _run(base, tmp_path / "o2", "--data", str(prepared), "--val-fraction", "0.2") == 2
    assert f"--val-fraction holds out part of each text file, but --data {prepared} is prepared data, whose val.bin " \
           "`minigpt prepare` split off already: drop --val-fraction" in capsys.readouterr().err
    gpt2_tokens = tmp_path / "gpt2_tokens"
    prepare([base / "corpus.txt"], Tokenizer.from_pretrained(GPT2_DIR), gpt2_tokens)
    assert _run(base, tmp_path / "o2", "--data", str(gpt2_tokens)) == 2
    assert f"the data's tokenizer ({gpt2_tokens / 'tokenizer'}) is not the tokenizer of the model in {base / 'base'}" \
           in capsys.readouterr().err
    shutil.rmtree(gpt2_tokens / "tokenizer")
    assert _run(base, tmp_path / "o2", "--data", str(gpt2_tokens)) == 2
    assert f"--data {gpt2_tokens} holds no tokenizer/ (`minigpt prepare` writes it beside the tokens), so nothing tells " \
           "which tokenizer's ids they are" in capsys.readouterr().err


def test_an_init_saved_without_its_tokenizer_says_to_pass_tokenizer(base, tmp_path, capsys):
    """An audit: --init a model saved by save_pretrained alone (config.json and weights, no
    tokenizer files) failed with "... holds neither vocab.json + merges.txt nor tokenizer.json",
    not naming the flag that serves it. The error now says to pass --tokenizer, which then runs."""
    bare = tmp_path / "bare"
    GPT.from_pretrained(base / "base").save_pretrained(bare)
    args = ("--data", str(base / "corpus.txt"), "--init", str(bare), "--max-iters", "1")
    assert _run(base, tmp_path / "o", *args) == 2
    assert f"{bare} holds neither vocab.json + merges.txt nor tokenizer.json: for a model saved without its tokenizer, " \
           "pass --tokenizer DIR (GPT-2's, shipped: --tokenizer gpt2)" in capsys.readouterr().err
    assert _run(base, tmp_path / "o", *args, "--tokenizer", str(base / "base")) == 0


def test_a_failed_adapter_save_names_the_checkpoint_that_stands(base, tmp_path):
    """A review: a LoRA run's adapters are written in OUT/adapter and best.new/adapter, which
    `what_stands` did not take back to OUT_DIR, so a full disk there said nothing of what stands."""
    import errno

    from minigpt.train_runtime import what_stands

    out = tmp_path / "o"
    assert _run(base, out, "--data", str(base / "corpus.txt"), "--strategy", "lora", "--max-iters", "2") == 0
    for folder in (out / "adapter", out / "best.new" / "adapter"):
        said = what_stands(OSError(errno.ENOSPC, "No space left on device", str(folder)))
        assert said == f"; the last checkpoint written whole, step 2 in {out}, stands: free space, then continue from it with --resume"


def test_a_repeated_data_flag_adds_its_files(tmp_path):
    """A review: argparse keeps the last of a repeated flag, so `--data a.txt --data b.txt`
    trained on b.txt alone, silently. Each --data adds its files, as `--data a.txt b.txt` does;
    without --data the run still says it is required. A later review: it said "--data is required"
    to a Python caller too, who passes data=: it names both now, as pretrain's does."""
    from minigpt.finetune import finetune
    from minigpt.train_config import parse_config

    def data(*argv):
        return parse_config(FinetuneConfig, ["--init", "gpt2", "--out", str(tmp_path / "o"), *argv], "finetune", "").data

    assert data("--data", "a.txt", "--data", "b.txt") == data("--data", "a.txt", "b.txt") == ("a.txt", "b.txt")
    assert data("--data", "a.txt") == "a.txt" and data() == ()
    with pytest.raises(ValueError, match=re.escape("--data (data= in Python) is required: text files or a DATA_DIR")):
        finetune(FinetuneConfig(init="gpt2", out=str(tmp_path / "o"), data=data()))


def test_the_summary_takes_the_last_evaluations_figures_from_it_alone(tmp_path):
    """An upgrade audit: write_summary merged the keys of every log record, so a classify run of an
    earlier minigpt (whose evaluations logged val_ppl), resumed, had a summary that paired step 10's
    val_loss with step 5's val_ppl. Every figure of the last evaluation comes from it, the train
    loss from the last record that holds one."""
    from minigpt.finetune import StrategySummary, write_summary
    from minigpt.run_log import append_log

    for r in ({"step": 5, "loss": 0.8}, {"step": 5, "val_loss": 0.7, "val_ppl": 2.01, "val_accuracy": 0.5},
              {"step": 5, "best_reset": True}, {"step": 10, "loss": 0.6, "lr": 1e-4},
              {"step": 10, "val_loss": 0.65, "val_accuracy": 0.6}):
        append_log(tmp_path, r)
    cfg = SimpleNamespace(out=str(tmp_path), task="classify", strategy="full")
    summary = write_summary(cfg, SimpleNamespace(device=torch.device("cpu")), 10, StrategySummary("full", 10, 10))
    assert (summary["loss"], summary["val_loss"], summary["val_accuracy"]) == (0.6, 0.65, 0.6)
    assert "val_ppl" not in summary
    assert json.loads((tmp_path / "finetune_summary.json").read_text()) == summary


@pytest.mark.parametrize("case", ["no fingerprint", "val_ppl logged", "today's"])
def test_resume_of_a_classify_run_that_sampled_its_val_loss_starts_best_over(base, tmp_path, capsys, case):
    """An upgrade audit: a classify run saved by a minigpt that took its val loss as the mean of
    --eval-iters sampled batches kept that best val loss when resumed, though every val example is
    scored now: no note, and a lucky sampled figure could keep best/ from ever following the run.
    Such a run now starts best/ over, with the note, on either sign of it: a state without the
    data's fingerprint (as commit 3da68b4 saved it: no data, command, log_partial or frozen entry,
    --eval-iters 2 in its config), or a log whose evaluations hold val_ppl (a state saved after
    fingerprints, before every example was scored). Today's run keeps its best. The saved best is
    made unbeatable: best/ moves on only if it starts over."""
    out = tmp_path / "o"
    args = ("--task", "classify", "--data", str(base / "cls.tsv"), "--strategy", "full")
    assert _run(base, out, *args, "--max-iters", "2") == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    state["best_val_loss"] = -1.0
    if case == "no fingerprint":
        state["config"]["eval_iters"] = 2
        for key in ("data", "command", "log_partial", "frozen"):
            del state[key]
    torch.save(state, out / "training_state.pt")
    if case == "val_ppl logged":
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        (out / "log.jsonl").write_text("".join(json.dumps({**r, "val_ppl": 2.0} if "val_loss" in r else r) + "\n"
                                               for r in log))
    capsys.readouterr()
    assert _run(base, out, *args, "--resume", "--max-iters", "4") == 0
    printed = capsys.readouterr().err
    best_step = json.loads((out / "best" / "metrics.json").read_text())["step"]
    if case == "today's":
        assert "not comparable" not in printed and best_step == 2
        return
    assert ("note: val loss is measured otherwise than the run's (sampled val batches → every val example), so its "
            "best val loss (-1) is not comparable: best/ follows this val loss from here") in printed
    assert best_step == 4 and {"step": 2, "best_reset": True} in map(json.loads, (out / "log.jsonl").read_text().splitlines())
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["best_val_loss_step"] == 4


def test_resume_of_a_run_saved_with_a_relative_data_path_and_a_preset_warns_of_nothing(base, tmp_path, monkeypatch,
                                                                                       capsys):
    """An upgrade audit: a run of an earlier minigpt resumed with its very command line warned
    `settings that differ from the saved run (saved, now): {'data': ('small.txt', '/abs/small.txt'),
    'preset': ('gpt2-mini', None)}`. Its config held --data as typed, relative, which the comparison
    did not make absolute (--data is one path or several, out of PATH_FIELDS), and a preset, which
    finetune no longer takes (--init fixes the shape). Neither is a change."""
    monkeypatch.chdir(base)
    out = tmp_path / "o"
    assert _run(base, out, "--data", "corpus.txt", "--max-iters", "2") == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    state["config"] |= {"data": "corpus.txt", "preset": "gpt2-mini"}  # as saved then
    torch.save(state, out / "training_state.pt")
    capsys.readouterr()
    assert _run(base, out, "--data", "corpus.txt", "--max-iters", "2", "--resume") == 0
    assert "settings that differ" not in capsys.readouterr().err
    # Several files saved as typed compare as the command line's, made absolute.
    cfg = FinetuneConfig(init="x", data=["corpus.txt", "cls.tsv"])
    assert cfg.kept_form("data", ["corpus.txt", "cls.tsv"]) == cfg.data == (str(base / "corpus.txt"), str(base / "cls.tsv"))


@pytest.mark.parametrize("task, data, losses", [("lm", "corpus.txt", (5.674656391143799, 5.670496940612793)),
                                                ("classify", "cls.tsv", (0.6477237194776535, 0.7183450609445572))])
def test_finetune_gives_the_callers_random_state_back_and_new_weights_depend_on_the_seed_alone(base, tmp_path, task, data,
                                                                                                  losses):
    """An audit of a long-lived service: finetune seeded torch's global generator for the LoRA
    adapters and the classify head outside train_loop's fork and left it so, and every in-process
    run left the caller's next unseeded draw the same. They are made in a fork now; the run itself is
    unchanged (the losses below are those before the change, whatever the caller's state)."""
    from minigpt.finetune import finetune

    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        cfg = FinetuneConfig(data=str(base / data), out=str(tmp_path / f"{task}{caller_seed}"), init=str(base / "base"),
                             task=task, strategy="lora", block_size=32, batch_size=4, max_iters=4, eval_interval=4,
                             eval_iters=2, warmup_iters=1, device="cpu")
        summary = finetune(cfg)
        assert torch.equal(torch.get_rng_state(), before)
        assert (summary["loss"], summary["val_loss"]) == pytest.approx(losses, rel=1e-5)


def test_init_a_nanogpt_checkpoint_names_the_converter(base, tmp_path, capsys):
    """A review: `finetune --init out/ckpt.pt` (or nanoGPT's out_dir) got no converter hint, though
    `train --init` gives one and the README says so. A file is called a pickle by its first bytes:
    a token file named .bin gets no such hint."""
    from minigpt.finetune import main

    (tmp_path / "out").mkdir()
    torch.save({"model": {}}, tmp_path / "out" / "ckpt.pt")
    (tmp_path / "train.bin").write_bytes(bytes(range(1, 65)) * 8)
    convert = r"python \S+scripts/convert_nanogpt.py \S+out\S* NEW_DIR"
    for init, said in ((tmp_path / "out" / "ckpt.pt", rf"is a file; .*; if it is nanoGPT's, convert it: {convert}$"),
                       (tmp_path / "out", rf"holds no config.json: .* \(it holds nanoGPT's ckpt.pt; convert it: {convert}\)$"),
                       (tmp_path / "train.bin", r"is a file; it names a checkpoint directory .*, or a GPT-2 size by name$")):
        assert main(["--init", str(init), "--data", str(base / "corpus.txt"), "--out", str(tmp_path / "o")]) == 2
        assert re.search(said, capsys.readouterr().err.strip()), init


def test_check_finetune_inputs_refuses_a_bad_data_or_init_before_the_run_touches_out_dir(tmp_path):
    """An audit: `finetune()` was ~97 lines that mixed the checks of --data and --init with running
    the job. The checks are `check_finetune_inputs`, which needs only the config: it names a bad
    path before OUT_DIR is locked or made, and lets a good one through."""
    from minigpt.finetune import check_finetune_inputs
    from minigpt.lora import ADAPTER_CONFIG

    text, out = tmp_path / "a.txt", tmp_path / "out"
    text.write_text("to be or not to be\n")
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": "gpt2"}))
    for data, init, error, message in [
        ("", "gpt2", ValueError, "--data (data= in Python) is required"),
        (str(tmp_path / "none.txt"), "gpt2", FileNotFoundError, "none.txt does not exist"),
        (str(tmp_path), "gpt2", ValueError, "is a directory without meta.json"),  # lm: neither text nor prepared
        (str(text), str(adapters), FileNotFoundError, "holds LoRA adapters alone (for the base model 'gpt2')"),
        (str(text), str(text), FileNotFoundError, "is a file; it names a checkpoint directory"),
        (str(text), str(tmp_path), FileNotFoundError, "holds no config.json: it is no checkpoint directory"),
    ]:
        with pytest.raises(error, match=re.escape(message)):
            check_finetune_inputs(FinetuneConfig(data=data, init=init, out=str(out)))
    assert check_finetune_inputs(FinetuneConfig(data=str(text), init="gpt2", out=str(out))) is None  # a size by name: found later
    assert not out.exists()


def test_finetune_help_names_its_three_tasks(capsys):
    """An audit: `minigpt finetune --help` said it fine-tunes "as a language model or a classifier",
    two of its three tasks: sft (instruction tuning) was missing."""
    from minigpt.finetune import main

    with pytest.raises(SystemExit):
        main(["--help"])
    about = capsys.readouterr().out.split("\n\n")[1]  # the description, after the usage lines
    for task in ("--task lm", "--task classify", "--task sft"):
        assert task in " ".join(about.split()), about


def test_finetune_leaves_the_callers_config_as_it_was_and_logs_the_settled_one(base, tmp_path):
    """An audit: finetune(cfg) wrote the settings it settles into the caller's FinetuneConfig
    (block_size from the model, a new head's pooling and head_hidden, auto_resume into resume), so
    a config reused for another run carried this one's. It settles a copy now, which the log records."""
    import dataclasses

    from minigpt.finetune import finetune
    from minigpt.finetune_config import NEW_HEAD

    cfg = FinetuneConfig(init=str(base / "base"), data=str(base / "cls.tsv"), out=str(tmp_path / "o"), task="classify",
                         strategy="frozen", max_iters=1, eval_interval=0, batch_size=4, warmup_iters=0, auto_resume=True)
    passed = dataclasses.asdict(cfg)
    finetune(cfg)
    assert dataclasses.asdict(cfg) == passed
    logged = json.loads((tmp_path / "o" / "log.jsonl").read_text().splitlines()[0])["config"]
    n_positions = json.loads((base / "base" / "config.json").read_text())["n_positions"]
    assert (logged["block_size"], logged["resume"], logged["auto_resume"]) == (n_positions, False, False)
    assert {name: logged[name] for name in NEW_HEAD} == NEW_HEAD


@pytest.mark.parametrize("name, value", [("n_layer", 4), ("n_positions", 16)])
def test_a_shape_field_set_on_a_finetune_config_is_still_refused(base, tmp_path, name, value):
    """A review: finetune copied its config with dataclasses.replace, which resets each init=False
    field to its default, so a shape field a caller set on the config (cfg.n_layer = 4) vanished and
    the run trained --init's shape, where build_model had refused it. A copy keeps the field."""
    from minigpt.finetune import finetune

    cfg = FinetuneConfig(init=str(base / "base"), data=str(base / "cls.tsv"), out=str(tmp_path / "o"), task="classify",
                         strategy="frozen", max_iters=2, eval_interval=0, batch_size=4, warmup_iters=0)
    setattr(cfg, name, value)
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} cannot change the shape of the --init checkpoint"):
        finetune(cfg, progress=False)
    assert getattr(cfg, name) == value and not (tmp_path / "o" / "log.jsonl").exists()


@pytest.mark.parametrize("task", ["classify", "sft", "lm"])
def test_finetune_progress_false_keeps_stdout_and_stderr_free_of_the_runs_progress(base, tmp_path, capsys, task):
    """A library audit: train_loop and pretrain took progress=False, finetune did not, so a Python
    caller could not quiet it: the step lines on stdout, the bars (training; classify's and sft's
    scoring of every val example; lm's tokenizing of its text files, which still drew after the
    first fix, as prepare took no progress) and the closing line on stderr, and the
    trainable-parameters line. progress=False turns all of them off; the notes on the data are still said."""
    from minigpt.finetune import finetune
    from minigpt.run_log import read_log

    if task == "classify":
        data = base / "cls.tsv"
    elif task == "sft":
        data = tmp_path / "pairs.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"the speech was {w}", "completion": " indeed"}) + "\n"
                                for w in ("bad", "poor", "good", "fine") * 5))
    else:
        data = base / "corpus.txt"
    kw = dict(init=str(base / "base"), data=str(data), task=task, strategy="full", max_iters=2, eval_interval=2,
              eval_iters=2, batch_size=4, warmup_iters=0, block_size=64, val_fraction=0.2)
    finetune(FinetuneConfig(**kw, out=str(tmp_path / "loud")))
    loud = capsys.readouterr()
    # the summary line, the bars (lm: no bar of its own at evaluations, one while it tokenizes), the closing line
    said = ("strategy full: training", "training:", "tokenizing:" if task == "lm" else "evaluating:", "latest:")
    assert "step 2: val_loss" in loud.out and all(words in loud.err for words in said), loud.err

    summary = finetune(FinetuneConfig(**kw, out=str(tmp_path / "quiet")), progress=False)
    quiet = capsys.readouterr()
    assert quiet.out == "" and not any(words in quiet.err for words in said), quiet.err
    if task != "lm":  # (lm's text files make no note)
        assert re.search(rf"{task}: \d+ train / \d+ val examples", quiet.err)  # a note on the data, still said
    assert summary["steps"] == 2 and [r["step"] for r in read_log(tmp_path / "quiet") if "val_loss" in r] == [2]


def test_finetune_config_repr_makes_it_again_and_its_errors_name_the_python_spelling(base, tmp_path):
    """A config audit: FinetuneConfig's repr listed the shape fields it cannot take (preset=None,
    n_layer=None, ...: TrainConfig's, fixed by --init), so eval(repr(cfg)) failed on them; and some of
    its errors named only the command line's flags to a Python caller ("--init MODEL_DIR is
    required"), where the others in the same checks say both (pooling='mean' (--pooling))."""
    from minigpt.train_config import TrainConfig

    cfg = FinetuneConfig(init=str(base / "base"), data=str(base / "cls.tsv"), task="classify", pooling="mean")
    assert "preset=" not in repr(cfg) and "n_layer=" not in repr(cfg)
    assert eval(repr(cfg), {"FinetuneConfig": FinetuneConfig}) == cfg
    assert "preset=None, n_layer=None" in repr(TrainConfig())  # train's own shape fields are arguments: listed
    with pytest.raises(ValueError, match=re.escape("--init (init= in Python) is required: the pretrained model to start "
                                                   "from: a checkpoint directory or a GPT-2 size by name")):
        FinetuneConfig(data=str(base / "cls.tsv"))
    two = [str(base / "cls.tsv"), str(base / "corpus.txt")]
    with pytest.raises(ValueError, match=re.escape("--data (data= in Python) names 2 paths, but task 'sft' reads one JSON "
                                                   "Lines file, and its validation examples from another, given as --val-data "
                                                   "(val_data= in Python); several text files are for --task lm "
                                                   "(task='lm' in Python)")):
        FinetuneConfig(init=str(base / "base"), data=two, task="sft")
