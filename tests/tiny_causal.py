"""A tiny randomly initialised GPT-2 with a real byte-level BPE tokenizer and a chat template.

Built from the shared corpus and saved with ``save_pretrained``, so the generate worker
loads it through production's ``from_pretrained(path)``. The weights are drawn wider
than GPT-2's default (``initializer_range``) so the greedy continuation depends on the
prompt instead of collapsing to one token. The tokenizer has no pad token, like GPT-2's.

    >>> path = build_gpt2(Path("/tmp/tiny-gpt2"))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.fixtures import ARTIFACTS
from tests.tiny_models import corpus_texts

VOCAB = 800
CONTEXT = 128  # small, so a license needs several prompts and a reduce round
# A ChatML-style template (Qwen's shape), enough to render OpenAI messages.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_gpt2(out: Path) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus_texts(),
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=CONTEXT,
    )
    tok.chat_template = CHAT_TEMPLATE
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=CONTEXT,
        n_embd=64,
        n_layer=2,
        n_head=2,
        initializer_range=0.2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2() -> str:
    """Path of the tiny GPT-2, built once per version of this file."""
    import torch

    torch.set_num_threads(1)
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    out = ARTIFACTS / f"tiny-gpt2-{digest}"
    if not (out / "config.json").exists():
        build_gpt2(out)
    return str(out)
