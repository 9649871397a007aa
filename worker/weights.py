"""The model weights the workers load from the hub, and filling the hub cache with them.

Workers never download: they read the hub cache under ``HF_HOME`` offline
(``HF_HUB_OFFLINE=1``), by hub id and pinned revision. ``docbatch models fill`` puts
there exactly what they will ask for. The plan is each deployment's handler's own
``hub_models()`` (the id and revision its ``setup`` loads and its results record, so the
two cannot disagree), plus translation pairs and models named on the command line. The
layout is huggingface_hub's cache, which ``from_pretrained`` reads::

    $HF_HOME/hub/models--<org>--<name>/
        refs/<revision>           the commit a branch, tag or short hash resolved to
        snapshots/<commit>/...    the files of that commit (links into blobs/)
        blobs/<sha>               the file contents

Example::

    models = plan(get_settings(), pairs=[("en", "de")])
    for done in fill(models):
        print(done.model.repo_id, done.commit)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from docbatch.schema.errors import DocbatchError
from docbatch.schema.settings import Settings

# What a worker reads: configs, tokenizers, chat templates and the weights. A repository's
# TF/Flax/ONNX/Rust copies are left out, and so are PyTorch pickles when safetensors exist.
WANTED = ["*.json", "*.txt", "*.model", "*.spm", "*.tiktoken", "*.jinja", "*.safetensors"]
PICKLES = ["*.bin"]


class FillError(DocbatchError):
    """A model could not be fetched or is not in the cache; the message names it."""


@dataclass(frozen=True)
class HubModel:
    """One repository at one revision, and the deployments that load it."""

    repo_id: str
    revision: str
    used_by: tuple[str, ...] = field(default=(), compare=False)

    @property
    def named(self) -> str:
        return f"{self.repo_id}@{self.revision} (used by {', '.join(self.used_by)})"

    @property
    def pinned(self) -> bool:
        """A commit (short or full), not a branch or tag that moves."""
        return re.fullmatch(r"[0-9a-f]{7,40}", self.revision) is not None


@dataclass
class Filled:
    model: HubModel
    commit: str
    path: Path


def parse_model(text: str) -> HubModel:
    """``org/name@revision`` or ``org/name revision`` (a line of a models list)."""
    parts = text.replace("@", " ").split()
    if len(parts) != 2:
        raise FillError(f"{text!r}: write a model as <hub id>@<revision>, e.g. org/name@1a2b3c4")
    return HubModel(parts[0], parts[1], ("listed",))


def read_list(path: str | Path) -> list[HubModel]:
    """A models list: one ``<hub id> <revision>`` per line; ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [parse_model(line) for line in lines if line]


def parse_pair(text: str) -> tuple[str, str]:
    src, sep, tgt = text.partition("-")
    if not (sep and src and tgt):
        raise FillError(f"{text!r}: write a translation pair as SRC-TGT, e.g. en-de")
    return src, tgt


def plan(
    settings: Settings,
    pairs: Iterable[tuple[str, str]] = (),
    extra: Iterable[HubModel] = (),
) -> list[HubModel]:
    """Every hub model the fleet's workers load, each once, with the deployments using it."""
    from docbatch.worker.handlers.translate import TranslateHandler
    from docbatch.worker.registry import load_handler

    wanted = list(pairs)
    users: dict[tuple[str, str], list[str]] = {}
    for name in settings.fleet:
        handler = load_handler(name, settings)
        found = handler.hub_models()
        if isinstance(handler, TranslateHandler):
            found += handler.pair_models(wanted)
        for key in found:
            users.setdefault(key, []).append(name)
    for model in extra:
        users.setdefault((model.repo_id, model.revision), []).extend(model.used_by)
    return [HubModel(repo, rev, tuple(names)) for (repo, rev), names in users.items()]


def fill(models: Iterable[HubModel], cache_dir: str | None = None) -> Iterator[Filled]:
    """Download each model into the hub cache (``cache_dir``, default ``$HF_HOME/hub``),
    then find it again as a worker will, offline; yields each as it is done. Raises
    FillError naming every model that failed (after trying them all)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise FillError("HF_HUB_OFFLINE is set: filling needs the hub; run with HF_HUB_OFFLINE=0")
    failed: list[str] = []
    for model in models:
        try:
            yield _fill_one(model, cache_dir)
        except FillError as exc:
            failed.append(str(exc))
    if failed:
        raise FillError("\n".join(failed))


def check(models: Iterable[HubModel], cache_dir: str | None = None) -> list[Filled]:
    """Each model as the cache holds it, offline; FillError naming every one missing."""
    found, missing = [], []
    for model in models:
        try:
            found.append(_offline(model, cache_dir))
        except FillError as exc:
            missing.append(str(exc))
    if missing:
        raise FillError("\n".join(missing))
    return found


def _fill_one(model: HubModel, cache_dir: str | None) -> Filled:
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(model.repo_id, revision=model.revision)
        patterns = WANTED + ([] if any(f.endswith(".safetensors") for f in files) else PICKLES)
        snapshot_download(
            model.repo_id, revision=model.revision, cache_dir=cache_dir, allow_patterns=patterns
        )
    except Exception as exc:  # the hub's HTTP errors, httpx's network errors, a full disk
        raise FillError(f"{model.named}: download failed: {exc}") from None
    return _offline(model, cache_dir)


def _offline(model: HubModel, cache_dir: str | None) -> Filled:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    where = model.named
    try:
        path = Path(
            snapshot_download(
                model.repo_id,
                revision=model.revision,
                cache_dir=cache_dir,
                allow_patterns=WANTED,
                local_files_only=True,
            )
        )
    except IncompleteSnapshotError as exc:
        raise FillError(f"{where}: {exc}") from None
    except LocalEntryNotFoundError:
        raise FillError(
            f"{where} is not in the models cache: run `docbatch models fill` with this HF_HOME"
        ) from None
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not (path / "config.json").exists() or not weights:
        raise FillError(f"{where}: the cached snapshot {path} has no config.json or no weights")
    return Filled(model, path.name, path)
