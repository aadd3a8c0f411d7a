"""The score stage's folder: its settings, `state.json`, its shards and what a rerun can reuse.

  pseudo_labels-00000-of-00012.jsonl ...   one shard per chunk of `questions_per_chunk`
                                           questions, each written atomically once its chunk
                                           is fully scored; `formats.read_retrieval(
                                           folder / "pseudo_labels.jsonl")` reads the complete
                                           set and refuses an incomplete one
  state.json      the settings (scorer, reduction, dtype, top-k, lengths), the input layout
                  and the shards done (each with its SHA-256); rewritten atomically after
                  every shard
  manifest.json   written last, once every question is labelled: counts, settings, timing;
                  its presence is what says the stage finished

Settings: `ScoreFolder` is the `StageFolder` of the stage (lock, settings refused naming what
differs, temporaries swept), reading its settings from `state.json`.

Resume is keyed by (question id, passage id): `plan_resume` lists the shards the state says are
done (and whose checksum still matches), and reads back the scores of any other finished shard
(a shard written just before a crash, or shards of an earlier chunking) and of `resume_from`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

from umr_jax.data import files, formats
from umr_jax.errors import InputError
from umr_jax.models.locate import is_model_id, resolve_model_dir
from umr_jax.stages.folder import StageFolder, file_sha256
from umr_jax.stages.score_input import RetrievedInput, read_scored

SHARDS_NAME = "pseudo_labels.jsonl"  # shards are pseudo_labels-NNNNN-of-NNNNN.jsonl
STATE = "state.json"
MANIFEST = "manifest.json"
STATE_FORMAT = "umr-jax-pseudo-labels-state"
MANIFEST_FORMAT = "umr-jax-pseudo-labels"
VERSION = 1
_SHARD_FILE = re.compile(r"^pseudo_labels-(\d{5})-of-(\d{5})\.jsonl$")


# ----------------------------------------------------------------------------------------------
# Settings: what a folder's labels were made with


def scorer_fingerprint(folder: str | os.PathLike) -> str:
    """A content fingerprint of a Hugging Face model folder, the same wherever the folder lives:
    sha256 over config.json and, per weight file, its size and 16 evenly spaced 64 KiB samples
    (cheap even for mT5-XL's 15 GB). A Hugging Face model ID fingerprints its snapshot folder in
    the HF cache; another path that is not a folder fingerprints as its name."""
    if is_model_id(folder):
        folder = resolve_model_dir(folder)
    folder = Path(folder)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(os.fspath(folder).encode("utf-8"))
        return digest.hexdigest()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    weights = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")))
    block = 1 << 16
    for path in weights:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode("utf-8"))
        with open(path, "rb") as f:
            for offset in sorted({min(size, i * max(0, size - block) // 15) for i in range(16)}):
                f.seek(offset)
                digest.update(f.read(block))
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Stage1Settings:
    """Everything that changes a pseudo label's score; a folder only ever holds one setting.

    `scorer` is the name written into every record; the scorer is identified by
    `scorer_fingerprint` (so the same model under another path is the same scorer).
    """

    scorer: str
    scorer_fingerprint: str
    reduction: str
    dtype: str
    top_k: int
    max_source_length: int
    max_target_length: int

    @classmethod
    def of(cls, scorer, top_k: int) -> "Stage1Settings":
        """The settings of a `QuestionLikelihoodScorer` (its folder is `scorer.name`)."""
        return cls(
            scorer=scorer.name,
            scorer_fingerprint=scorer_fingerprint(scorer.name),
            reduction=scorer.reduction,
            dtype=str(scorer.config.dtype),
            top_k=int(top_k),
            max_source_length=int(scorer.max_source_length),
            max_target_length=int(scorer.max_target_length),
        )


def chunk_layout(retrieved: RetrievedInput, questions_per_chunk: int) -> dict[str, Any]:
    """How the input is cut into shards (`state.json`'s "layout"): a rerun with another layout
    reuses the earlier shards' scores, not the shards."""
    return {
        "questions": retrieved.questions,
        "pairs": retrieved.pairs,
        "keys_sha256": retrieved.keys_sha256,
        "questions_per_chunk": int(questions_per_chunk),
        "num_shards": max(1, math.ceil(retrieved.questions / questions_per_chunk)),
    }


def load_json(path: Path, expected_format: str) -> dict:
    """`state.json` or `manifest.json`, refused unless it is a JSON object of `expected_format`."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable ({err}); expected a {expected_format} JSON file", path) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise InputError(f"not a {expected_format} file", path)
    return obj


def dump_json(path: Path, obj: dict) -> None:
    """`obj` as indented JSON, keys in their order (as every score folder has them), atomically."""
    with files.AtomicFile(path) as f:
        f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# The folder


def finished_shards(output: Path) -> list[tuple[int, int, Path]]:
    """(index, count, path) of every finished shard in the folder, of any shard count."""
    if not output.is_dir():
        return []
    found = []
    for path in output.iterdir():
        match = _SHARD_FILE.match(path.name)
        if match:
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


def shard_path(output: str | os.PathLike, index: int, num_shards: int) -> Path:
    """`output/pseudo_labels-00003-of-00012.jsonl`."""
    return files.shard_path(Path(output) / SHARDS_NAME, index, num_shards)


class ScoreFolder(StageFolder):
    """The score folder as a `StageFolder` (lock, settings check, temporaries): its settings are
    `state.json`'s "settings" (`Stage1Settings`), the scorer compared by its fingerprint, not its
    path; a refusal names the differing settings as the command's flags do."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "score", settings_file=STATE, ignore=("scorer",))

    def saved_state(self) -> dict | None:
        """`state.json` (None when there is none), refused unless it is a score state."""
        path = self.path / STATE
        return load_json(path, STATE_FORMAT) if path.exists() else None

    def saved_settings(self) -> dict | None:
        state = self.saved_state()
        if state is None:
            return None
        settings = state.get("settings")
        return settings if isinstance(settings, dict) else {}

    def leftovers(self) -> list[str]:
        """The outputs of a run found in the folder (refused in a folder without `state.json`)."""
        return [path.name for _, _, path in finished_shards(self.path)] + ([MANIFEST] if (self.path / MANIFEST).exists() else [])

    def check_settings(self, settings: Stage1Settings) -> bool:
        """`StageFolder.check` with these settings: True when the folder holds labels made with
        them, False when it holds none; changes nothing. Raises `InputError` naming every
        setting that differs (a different scorer, reduction, dtype, top-k or length limits)."""
        return self.check(dataclasses.asdict(settings), leftovers=self.leftovers())

    def refusal(self, saved, requested, keys: list[str]) -> str:
        order = [field.name for field in dataclasses.fields(Stage1Settings)]
        keys = sorted(keys, key=lambda key: (order.index(key) if key in order else len(order), key))

        def show(values: dict, key: str) -> str:
            if key == "scorer_fingerprint":  # name the scorers, not their hashes
                return f"scorer={values.get('scorer')!r} (fingerprint {str(values.get(key))[:12]})"
            return f"{key.replace('_', '-')}={values.get(key)!r}"

        return (f"this folder holds pseudo labels made with {', '.join(show(saved, k) for k in keys)}; "
                f"this run asks for {', '.join(show(requested, k) for k in keys)}. "
                "Score into a new output folder (or delete this one) to relabel")


@dataclasses.dataclass
class Plan:
    """Process 0's view of the folder at start: what is done, what scores can be reused."""

    state: dict
    done: set[int]
    known: dict[str, dict[str, float]]  # question id -> passage id -> score, from earlier outputs
    complete: bool


def plan_resume(stage: ScoreFolder, settings: Stage1Settings, layout: dict, retrieved: str,
                resume_from: str | os.PathLike | None, known_languages=None) -> Plan:
    """What a run into `stage` (locked) does: refuses other settings, sweeps temporaries, and
    finds the shards done and the scores it can reuse."""
    stage.begin(dataclasses.asdict(settings), leftovers=stage.leftovers(), write=False)  # state.json is ours to write
    output, state = stage.path, stage.saved_state()
    fresh = {"format": STATE_FORMAT, "version": VERSION, "settings": dataclasses.asdict(settings), "layout": layout, "retrieved": retrieved,
             "shards_done": [], "pairs_scored": 0, "scoring_seconds": 0.0, "runs": 0}
    if state is None or state.get("layout") != layout:
        previous = state
        state = fresh
        if previous is not None:  # an earlier chunking: its shards only contribute scores
            state.update({k: previous.get(k, fresh[k]) for k in ("pairs_scored", "scoring_seconds", "runs")})
    num_shards = layout["num_shards"]
    checksums = state.setdefault("shard_sha256", {})
    done = {i for i in state["shards_done"] if shard_matches(shard_path(output, i, num_shards), checksums)}
    known: dict[str, dict[str, float]] = {}
    for index, count, path in finished_shards(output):
        if count == num_shards and index in done:
            continue
        add_scores(known, formats.read_retrieval(path, known_languages=known_languages))
    if resume_from is not None:
        add_scores(known, read_scored(resume_from, known_languages))
    complete = (output / MANIFEST).exists() and len(done) == num_shards
    state["shards_done"] = sorted(done)
    return Plan(state, done, known, complete)


def shard_matches(path: Path, checksums: dict[str, str]) -> bool:
    """A shard is done only when the state lists it with the checksum of the file under its name."""
    return path.is_file() and checksums.get(path.name) == file_sha256(path)


def add_scores(known: dict[str, dict[str, float]], results: Iterable[formats.RetrievalResult]) -> None:
    for result in results:
        scores = known.setdefault(result.id, {})
        for ctx in result.ctxs:
            scores[ctx.id] = ctx.score
