"""minigpt's annotations as a user's type checker reads them (minigpt ships py.typed).

One `mypy --strict` run over a user's script (SNIPPET): the calls README shows must type-check, with
the types they have at run time; a name minigpt lacks must be an error, not an Any. Each line says
what mypy must say of it: `# E: CODE` an error of that code, `# R: TYPE` what `reveal_type` shows;
a line without either must be clean.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

SNIPPET = '''
import os
from pathlib import Path

import numpy as np
import torch

import minigpt
from minigpt import GPT, GPTConfig, Tokenizer, generate, generate_text, generate_texts
from minigpt import Nope  # E: attr-defined
from minigpt.classifier import GPTClassifier
from minigpt.evaluate import perplexity
from minigpt.finetune_config import FinetuneConfig
from minigpt.train_config import TrainConfig

minigpt.Tokenizr.from_pretrained("gpt2")  # E: attr-defined


class MyGPT(GPT): ...
class MyTokenizer(Tokenizer): ...
class MyClassifier(GPTClassifier): ...
class MyConfig(GPTConfig): ...


# Called on a subclass, the constructors build it (README: MyGPT.from_pretrained(...) builds a MyGPT).
model: GPT = GPT.from_pretrained("gpt2", dtype=torch.float32)
reveal_type(MyGPT.from_pretrained("gpt2"))  # R: user_code.MyGPT
reveal_type(MyTokenizer.from_pretrained("gpt2"))  # R: user_code.MyTokenizer
reveal_type(MyTokenizer.train("some text", 260))  # R: user_code.MyTokenizer
reveal_type(MyTokenizer.from_tiktoken("gpt2.tiktoken"))  # R: user_code.MyTokenizer
reveal_type(MyClassifier.from_pretrained(Path("clf"), dtype="float32"))  # R: user_code.MyClassifier
reveal_type(MyConfig.gpt2("gpt2-medium", dropout=0.1))  # R: user_code.MyConfig
reveal_type(MyConfig.from_pretrained("gpt2"))  # R: user_code.MyConfig

# One id gives a token (a str), several a list; decode takes one id too.
tok = Tokenizer.from_pretrained("gpt2")
reveal_type(tok.convert_ids_to_tokens(15496))  # R: str
reveal_type(tok.convert_ids_to_tokens(np.int64(15496)))  # R: str
reveal_type(tok.convert_ids_to_tokens([15496, 995]))  # R: list[str]
text: str = tok.decode(15496)
text = tok.decode(np.int64(15496))
logits = torch.randn(50257)
text = tok.decode(logits.argmax())  # a 0-d tensor
text = tok.decode([15496, 995]) + tok.decode_bytes(15496).decode()
tok.decode("Hello")  # E: arg-type
reveal_type(tok.padding_side)  # R: Literal['left'] | Literal['right']
batch = tok(["Hi", "Hello world"], padding=True, padding_side=tok.padding_side, return_tensors="pt")

# Stop strings and EOS ids: one, or a list or tuple of them.
ids = batch["input_ids"]
out: torch.Tensor = generate(model, ids, batch["attention_mask"], stop=("\\n", "."), eos_token_id=(0, 1), tokenizer=tok)
out = generate(model, ids, stop="\\n", eos_token_id=50256, tokenizer=tok)
out = generate(model, ids, stop=["\\n"], eos_token_id=[50256], tokenizer=tok)
out = generate(model, ids, stop=[1, 2], tokenizer=tok)  # E: list-item
texts: list[str] = generate_text(model, tok, "Hello", stop=("\\n",), eos_token_id=(50256,))
answers: list[list[str]] = generate_texts(model, tok, ["Q: 2 + 2?", "Q: the capital?"], stop="\\n")

# perplexity's "tokens" is a count.
ppl = perplexity(model, torch.tensor(tok.encode("To be or not to be")))
tokens: int = ppl["tokens"]
nll: float = ppl["nll"]

# The configs take Paths, several data paths, and torch's device and dtype (README).
cfg = TrainConfig(data=Path("data"), out=Path("out"), init=Path("ckpt"), device=torch.device("cuda", 0), dtype=torch.float32)
ft = FinetuneConfig(init="gpt2", data=[Path("a.txt"), "b.txt"], out=Path("ft"), device=torch.device("cpu"))
ft = FinetuneConfig(init=Path("gpt2"), data=("a.txt", "b.txt"), tokenizer=Path("tok"), dtype="bfloat16")
'''

# The parts of torch that `import torch` reads and that type nothing the snippet uses (its compiler,
# distributed training, export...): about 2/3 of what mypy would analyse, taken as Any instead.
# (Cold, with them: a minute on a busy 2-core machine; without them, a third of that.)
TORCH_UNUSED = ["torch._inductor", "torch.distributed", "torch._dynamo", "torch.ao", "torch.fx", "torch._functorch",
                "torch._higher_order_ops", "torch.onnx", "torch._export", "torch.export", "torch.distributions",
                "torch.profiler", "torch.package", "torch.jit", "torch._numpy", "torch.quantization", "torch._subclasses",
                "torch._prims", "torch._refs", "torch._decomp", "torch.testing", "torch.utils.data", "sympy"]
REPO = Path(__file__).parents[1]


def expectations(snippet: str) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """Each line of `snippet` ("LINE: its text") → (the codes of the errors mypy must report there,
    sorted, each once; the type reveal_type must show there, or None)."""
    expected = {}
    for n, line in enumerate(snippet.splitlines(), 1):
        errors = tuple(sorted(set(re.findall(r"# E: ([\w-]+)", line))))
        revealed = re.search(r"# R: (.+)$", line)
        expected[f"{n}: {line}"] = (errors, revealed[1] if revealed else None)
    return expected


def test_the_readme_calls_type_check_under_mypy_strict(tmp_path):
    """A typing audit: `from minigpt import Nope` passed (the module __getattr__ made it an Any),
    MyGPT.from_pretrained was typed as a GPT, decode(one_id) and convert_ids_to_tokens(np.int64(5))
    were errors, tok.padding_side was `str | _Side`, stop=("\n",) and eos_token_id=(0, 1) matched no
    overload, perplexity's "tokens" was a float, and the configs refused a Path and torch.device."""
    (tmp_path / "user_code.py").write_text(SNIPPET)
    (tmp_path / "mypy.ini").write_text(f"[mypy]\n[mypy-{','.join(m + '.*' for m in TORCH_UNUSED)}]\nfollow_imports = skip\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--config-file", "mypy.ini",
                           "--cache-dir", str(tmp_path / "cache"), "--no-color-output", "--no-error-summary",
                           "user_code.py"],
                          cwd=tmp_path, env={**os.environ, "MYPYPATH": str(REPO)}, capture_output=True, text=True)
    print(f"mypy took {time.perf_counter() - start:.1f} s")
    lines = SNIPPET.splitlines()
    got = {f"{n}: {line}": ((), None) for n, line in enumerate(lines, 1)}
    for report in done.stdout.splitlines():
        m = re.match(r"user_code\.py:(\d+): (error|note): (.*)", report)
        assert m, f"mypy said: {report}\n{done.stdout}{done.stderr}"
        key = f"{m[1]}: {lines[int(m[1]) - 1]}"
        errors, revealed = got[key]
        if m[2] == "error":
            got[key] = (tuple(sorted({*errors, re.search(r"\[([\w-]+)\]$", m[3])[1]})), revealed)
        elif m[3].startswith("Revealed type is "):
            # (mypys before 2 spell the builtins "builtins.str": 1.18 does, 2.4 not)
            got[key] = (errors, m[3].removeprefix("Revealed type is ").strip('"').replace("builtins.", ""))
    # 1: the errors expected. ("No module named mypy": it is in the test extra, pip install -e '.[test]')
    assert done.returncode == 1 and not done.stderr, done.stdout + done.stderr
    assert got == expectations(SNIPPET), done.stdout
