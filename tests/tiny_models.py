"""Tiny randomly initialised seq2seq models with real tokenizers, built from the corpus.

No hub is reachable, so tests and benchmarks build their own: a byte-level BPE
tokenizer (BART), a Unigram tokenizer (T5) and a SentencePiece model (Marian), each
trained on the shared corpus, plus a model from a small config, saved with
``save_pretrained`` so production's ``from_pretrained(path)`` loads them.

    >>> paths = build_all(Path("/tmp/tiny"))
    >>> paths["bart"], paths["marian_template"]
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import load_corpus

VOCAB = 800
MAX_POSITIONS = 96  # small, so licenses.jsonl needs several chunks and map-reduce rounds
SIZE = {"d_model": 32, "layers": 2, "heads": 2, "ffn": 64}


def corpus_texts() -> list[str]:
    docs = load_corpus("stdlib-docs.jsonl", 200) + load_corpus("licenses.jsonl", 4)
    return [d["text"] for d in docs]


def build_bart(out: Path) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus_texts(),
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MAX_POSITIONS,
    )
    config = BartConfig(
        vocab_size=len(tok),
        d_model=SIZE["d_model"],
        encoder_layers=SIZE["layers"],
        decoder_layers=SIZE["layers"],
        encoder_attention_heads=SIZE["heads"],
        decoder_attention_heads=SIZE["heads"],
        encoder_ffn_dim=SIZE["ffn"],
        decoder_ffn_dim=SIZE["ffn"],
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_t5(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    out.mkdir(parents=True, exist_ok=True)
    uni = Tokenizer(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.decoder = decoders.Metaspace()
    uni.train_from_iterator(
        corpus_texts(),
        trainers.UnigramTrainer(
            vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
        ),
    )
    uni.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=uni,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_POSITIONS,
    )
    config = T5Config(
        vocab_size=len(tok),
        d_model=SIZE["d_model"],
        d_kv=16,
        d_ff=SIZE["ffn"],
        num_layers=SIZE["layers"],
        num_decoder_layers=SIZE["layers"],
        num_heads=SIZE["heads"],
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_marian(out: Path) -> Path:
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for t in corpus_texts() for line in t.splitlines() if line),
        model_prefix=str(out / "spm"),
        vocab_size=VOCAB,
        model_type="unigram",
        unk_id=1,
        eos_id=0,
        bos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes((out / "spm.model").read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["</s>"], vocab["<unk>"] = 0, 1
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    tok = MarianTokenizer(
        str(out / "source.spm"),
        str(out / "target.spm"),
        str(out / "vocab.json"),
        model_max_length=MAX_POSITIONS,
    )
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=SIZE["d_model"],
        encoder_layers=SIZE["layers"],
        decoder_layers=SIZE["layers"],
        encoder_attention_heads=SIZE["heads"],
        decoder_attention_heads=SIZE["heads"],
        encoder_ffn_dim=SIZE["ffn"],
        decoder_ffn_dim=SIZE["ffn"],
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=vocab["<pad>"],
        eos_token_id=0,
        decoder_start_token_id=vocab["<pad>"],
    )
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def convert_ct2(marian_dir: str) -> str:
    """Convert the tiny Marian with CTranslate2 (once); returns the {src}-{tgt} template."""
    import ctranslate2

    out = Path(marian_dir).parent.parent / "ct2" / Path(marian_dir).name
    if not (out / "model.bin").exists():
        files = ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"]
        ctranslate2.converters.TransformersConverter(marian_dir, copy_files=files).convert(
            str(out), force=True
        )
    return str(out.parent / "opus-mt-{src}-{tgt}")


def build_all(root: Path) -> dict[str, str]:
    """Build (once) and return paths: bart, t5, marian (en->de) and marian_template."""
    done = root / "built.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    paths = {
        "bart": str(build_bart(root / "bart")),
        "t5": str(build_t5(root / "t5")),
        "marian": str(build_marian(root / "marian" / "opus-mt-en-de")),
        "marian_template": str(root / "marian" / "opus-mt-{src}-{tgt}"),
    }
    done.write_text(json.dumps(paths))
    return paths


def _cache_dir() -> Path:
    import hashlib

    from tests.fixtures import ARTIFACTS

    # Rebuilt whenever this file changes; test-artifacts/ is the run's scratch space.
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return ARTIFACTS / f"tiny-models-{digest}"


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, str]:
    """Paths of the tiny BART, T5 and Marian (en->de) models, built once and cached."""
    import torch

    # As the workers do (DOCBATCH_TORCH_THREADS=1): on a shared 2-core machine, more
    # threads only fight each other.
    torch.set_num_threads(1)
    return build_all(_cache_dir())
