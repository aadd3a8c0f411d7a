"""Where a model's files are: every place that takes a model folder takes a Hugging Face model ID too.

    resolve_model_dir("/models/mcontriever")          # a local folder: itself
    resolve_model_dir("facebook/mcontriever")         # a model ID: its snapshot in the HF cache
    resolve_model_dir("google/mt5-xl@refs/pr/3")      # ... at a revision (branch, tag or commit)

A model ID is fetched with `huggingface_hub.snapshot_download` into the Hugging Face cache
(`HF_HOME` / `HF_HUB_CACHE`), only the files this stack reads: config.json, the safetensors
weights (PyTorch pickles only when a model has no safetensors), the tokenizer's files and the
sentence-transformers pooling files. An ID already in the cache loads without the network (and
under `HF_HUB_OFFLINE=1`); one that is neither cached nor reachable is a one-line `InputError`
that says how to fetch it on a machine with network.

A folder in a bucket (`gs://bucket/models/mcontriever`) is downloaded into the local mirror
(`umr_jax.storage`), each file only when the mirrored copy is stale. Each kind of location is
one branch of `resolve_model_dir`.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from umr_jax import storage
from umr_jax.errors import InputError

# What the loaders read (hf_checkpoint, hf_config, tokenizers, sentence-transformers pooling).
CONFIG_FILES = ["config.json"]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
TORCH_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "spiece.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt"]
SENTENCE_TRANSFORMERS_FILES = ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json",
                               "config_sentence_transformers.json"]

# A Hub repository name: `name` or `org/name` (letters, digits, `-`, `_`, `.`; at most 96 each),
# optionally `@revision` (a branch, tag or commit; branches may hold `/`, as refs/pr/3 does).
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_MODEL_ID = re.compile(rf"^(?P<repo>{_PART}(?:/{_PART})?)(?:@(?P<revision>[A-Za-z0-9_.\-/]+))?$")


def parse_model_id(spec: str | os.PathLike) -> tuple[str, str | None] | None:
    """(repo ID, revision or None) when `spec` reads as a Hugging Face model ID, else None.
    Whether a folder of that name exists is not looked at here."""
    text = os.fspath(spec)
    match = _MODEL_ID.match(text)
    if match is None or "--" in match["repo"] or ".." in match["repo"]:
        return None
    return match["repo"], match["revision"]


def is_model_id(spec: str | os.PathLike) -> bool:
    """Whether `spec` names a Hugging Face model ID rather than a local path: it reads as one
    and nothing exists at that path."""
    return parse_model_id(spec) is not None and not Path(os.fspath(spec)).exists()


def model_label(spec: str | os.PathLike) -> str:
    """How a run records a model: a model ID as given (the same on every machine), a folder as
    its absolute path."""
    if storage.is_remote(spec):
        return storage.normalize(spec)
    return os.fspath(spec) if is_model_id(spec) else storage.location(spec)


def resolve_model_dir(spec: str | os.PathLike, *, config_only: bool = False) -> Path:
    """A local folder holding the model `spec` names.

    Args:
      spec: a local model folder, a folder in a bucket (`gs://...`), or a Hugging Face model ID
        `org/name[@revision]`.
      config_only: fetch only config.json (enough to build the architecture, `umr-jax compile`).

    Returns an existing path as it is (a folder, or a file the loaders then refuse); an ID as
    its snapshot folder in the Hugging Face cache. Raises InputError naming `spec` when nothing
    is there and it is not a model ID, or the ID cannot be fetched (offline and not cached, no
    such repository or revision, a gated model without access).
    """
    text = os.fspath(spec)
    if not text:
        raise InputError("no model given; expected a Hugging Face model folder or a model ID (org/name[@revision])")
    if storage.is_remote(text):
        folder = storage.fetch(f"{storage.normalize(text)}/config.json").parent if config_only else storage.fetch(text)
        if not (folder / "config.json").is_file():
            raise InputError("no config.json there; expected a Hugging Face model folder (config.json, weights, tokenizer)",
                             storage.normalize(text))
        return folder
    path = Path(text)
    if path.exists():
        return path
    model_id = parse_model_id(text)
    if model_id is not None:
        return _hub_snapshot(*model_id, config_only=config_only)
    raise InputError("no such model folder; expected a Hugging Face model folder or a model ID (org/name[@revision])", text)


@functools.lru_cache(maxsize=None)
def _hub_snapshot(repo_id: str, revision: str | None, config_only: bool) -> Path:
    """The snapshot folder of a Hub model in the local cache, fetched when missing. One look-up
    per process and model: every stage that loads the model gets the same folder."""
    patterns = CONFIG_FILES if config_only else CONFIG_FILES + SAFETENSORS_FILES + TOKENIZER_FILES + SENTENCE_TRANSFORMERS_FILES
    folder = _snapshot(repo_id, revision, patterns)
    if not config_only and not any(folder.glob("*.safetensors")) and not (folder / "model.safetensors.index.json").is_file():
        folder = _snapshot(repo_id, revision, CONFIG_FILES + TORCH_FILES + TOKENIZER_FILES + SENTENCE_TRANSFORMERS_FILES)
    if not (folder / "config.json").is_file():
        raise InputError(f"{_fetch_hint(repo_id, revision, 'the cached snapshot has no config.json')}", _spec(repo_id, revision))
    return folder


def _snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    """`snapshot_download` of `patterns`; a Hub that cannot be reached (or HF_HUB_OFFLINE=1)
    falls back to the files already in the cache, as `local_files_only=True`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    where = _spec(repo_id, revision)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except hub_errors.RevisionNotFoundError:
        raise InputError(f"the Hugging Face Hub has no revision {revision!r} of {repo_id}", where) from None
    except hub_errors.GatedRepoError:
        raise InputError(f"{repo_id} is gated on the Hugging Face Hub: accept its terms on huggingface.co and log in "
                         "(`hf auth login`), or download it where you have access and pass the folder", where) from None
    except hub_errors.RepositoryNotFoundError:
        raise InputError(f"no such folder here and no model {repo_id!r} on the Hugging Face Hub (a private one needs "
                         "`hf auth login`); expected a model folder or a model ID (org/name[@revision])", where) from None
    except hub_errors.HFValidationError as err:
        raise InputError(f"not a usable Hugging Face model ID ({err}); expected a model folder or org/name[@revision]",
                         where) from None
    except Exception as err:  # the Hub unreachable, offline mode, a partial cache: what the cache holds
        reason = type(err).__name__
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:
        raise InputError(_fetch_hint(repo_id, revision, reason), where) from None


def _spec(repo_id: str, revision: str | None) -> str:
    return repo_id if revision is None else f"{repo_id}@{revision}"


def _fetch_hint(repo_id: str, revision: str | None, reason: str) -> str:
    from huggingface_hub import constants

    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
    revision_flag = "" if revision is None else f" --revision {revision}"
    return (f"no such folder here, and as a Hugging Face model ID it is not in the local cache ({constants.HF_HUB_CACHE}) "
            f"and {offline} ({reason}); on a machine with network run `hf download {repo_id}{revision_flag}` "
            f"(or `huggingface-cli download`), then pass the downloaded folder or point HF_HOME at that cache")
