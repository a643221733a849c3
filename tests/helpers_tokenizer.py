"""A tiny real tokenizer for tests: byte-level BPE trained in-process on a few code/prose texts.

Why not a hub tokenizer: tests run offline, and a trained BPE behaves like a real one (multi-token words,
merges across spaces) while taking ~0.1 s to build. Specials: `<pad>` (id 0), `</s>` (eos, id 1), `<unk>` (id 2).
"""

from __future__ import annotations

import functools

_TEXTS = [
    "### Instruction:\nWrite a function that adds two numbers.\n\n### Input:\nx = 1, y = 2\n\n### Response:\n",
    "def add(a, b):\n    return a + b\n",
    "def is_prime(n):\n    if n < 2:\n        return False\n    for i in range(2, int(n ** 0.5) + 1):\n"
    "        if n % i == 0:\n            return False\n    return True\n",
    "Your code should pass these tests:\nassert add(1, 2) == 3\nassert is_prime(7) == True\n",
    "import os\nfor name in sorted(os.listdir('.')):\n    print(name.upper(), len(name))\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n",
    "The quick brown fox jumps over the lazy dog. Return the sum of a list of integers.",
    "Write a Python function `def lexists(path)` (module `posixpath`). Test whether a path exists.",
]


@functools.lru_cache(maxsize=1)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_TEXTS * 4, trainer=trainer)
    return tok.to_str()


def make_test_tokenizer(vocab_size: int = 600):
    """A fresh `PreTrainedTokenizerFast` (eos `</s>`, pad `<pad>`, unk `<unk>`, no BOS, no chat template)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
