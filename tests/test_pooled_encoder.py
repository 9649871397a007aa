"""The lean sentence encoder (worker/handlers/pooled_encoder.py) against SentenceTransformer
on the same folders: same vectors for every pooling mode it takes, and the shapes it does
not take load through sentence-transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from docbatch.schema.settings import ModelConfig
from docbatch.worker.handlers.minilm import SentenceEncoderHandler, bundled_minilm_path
from docbatch.worker.handlers.pooled_encoder import PooledEncoder, load_plain_encoder, plain_shape
from tests.fixtures import load_corpus

ODD_TEXTS = ["  leading and trailing  \n", "\n\nTabs\tand  spaces ", "x", "", " ", "ü" * 900]


def texts() -> list[str]:
    return [d["text"] for d in load_corpus("stdlib-docs.jsonl")[:40]] + ODD_TEXTS


def model_copy(tmp_path: Path, pooling: dict[str, bool], modules: list[dict] | None = None) -> Path:
    """The bundled model's files linked into a folder with another Pooling config."""
    src = Path(bundled_minilm_path())
    dst = tmp_path / "model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "modules.json":
            (dst / f.name).symlink_to(f)
    (dst / "1_Pooling").mkdir()
    base = json.loads((src / "1_Pooling" / "config.json").read_text())
    base.update({k: False for k in base if k.startswith("pooling_mode")}, **pooling)
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(base))
    mods = modules or json.loads((src / "modules.json").read_text())
    (dst / "modules.json").write_text(json.dumps(mods))
    return dst


def assert_same_vectors(folder: str, normalize: bool) -> None:
    from sentence_transformers import SentenceTransformer

    lean = load_plain_encoder(folder, "cpu")
    assert isinstance(lean, PooledEncoder)
    st = SentenceTransformer(folder, device="cpu")
    assert lean.max_seq_length == st.max_seq_length
    batch = texts()
    ours = np.concatenate([lean.encode(batch[i : i + 8]) for i in range(0, len(batch), 8)])
    theirs = st.encode(batch, batch_size=8, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(batch), 384)
    assert np.abs(ours - theirs).max() < 1e-5
    norms = np.linalg.norm(ours, axis=1)
    if normalize:
        assert np.allclose(norms, 1.0, atol=1e-5)
    else:
        assert not np.allclose(norms, 1.0, atol=1e-3)


def test_bundled_model_runs_without_sentence_transformers_and_gives_its_vectors():
    assert_same_vectors(bundled_minilm_path(), normalize=True)
    # The default handler takes the lean path: sentence-transformers is never imported.
    probe = (
        "import sys\n"
        "from docbatch.schema.settings import ModelConfig\n"
        "from docbatch.worker.handlers.minilm import SentenceEncoderHandler\n"
        "h = SentenceEncoderHandler(ModelConfig()); h.setup('cpu')\n"
        "print(type(h.model).__name__, h.dim, 'sentence_transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["PooledEncoder", "384", "False"]


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_other_pooling_modes_equal_sentence_transformers(tmp_path, mode):
    folder = model_copy(
        tmp_path,
        {f"pooling_mode_{'cls_token' if mode == 'cls' else 'max_tokens'}": True},
        [m for m in json.loads((Path(bundled_minilm_path()) / "modules.json").read_text())][:2],
    )
    shape = plain_shape(folder)
    assert shape is not None and shape["pooling"] == mode and shape["normalize"] is False
    assert_same_vectors(str(folder), normalize=False)


def test_shapes_it_does_not_compute_load_through_sentence_transformers(tmp_path):
    # Two pooling modes at once (sentence-transformers concatenates them): not ours.
    folder = model_copy(
        tmp_path, {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}
    )
    assert plain_shape(folder) is None
    assert load_plain_encoder(str(folder), "cpu") is None
    handler = SentenceEncoderHandler(ModelConfig(model=str(folder)))
    handler.setup("cpu")
    assert type(handler.model).__name__ == "SentenceTransformer"
    assert handler.dim == 768  # the two poolings side by side
    assert handler.encode(["a sentence"]).shape == (1, 768)
    # A hub id (no such folder) is sentence-transformers' to resolve, too.
    assert load_plain_encoder("sentence-transformers/all-MiniLM-L6-v2", "cpu") is None
