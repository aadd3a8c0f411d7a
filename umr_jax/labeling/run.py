"""Stage 1 driver: pseudo labels for a retrieval result file, resumable, in atomic shards.

Reads a retrieval file (JSON lines `{id, question, lang, answers?, ctxs}` or a DPR JSON list),
keeps the first `top_k` ctxs of each question, scores every (question, passage) pair with the
`QuestionLikelihoodScorer`, and writes the same records with `ctxs[*].score` = the LM score
(ctxs in the retrieved order) and `scorer` = the scorer's name.

Output folder:
  pseudo_labels-00000-of-00012.jsonl ...   one shard per chunk of `questions_per_chunk`
                                           questions, each written atomically once its chunk
                                           is fully scored; `formats.read_retrieval(
                                           folder / "pseudo_labels.jsonl")` reads the complete
                                           set and refuses an incomplete one
  state.json      the settings (scorer, reduction, dtype, top-k, lengths), the input layout
                  and the shards done; rewritten atomically after every shard
  manifest.json   written last, once every question is labelled: counts, settings, timing;
                  its presence is what says the stage finished

Resume is keyed by (question id, passage id): a rerun into the same folder skips every shard
the state lists as done, reads back the scores of any other finished shard (a shard written
just before a crash, or shards of an earlier chunking) and of `resume_from`, and scores only
the pairs that are still missing. A folder made with other settings is refused.

Multi-host: every process runs the same driver over the same input (the scorer slices each
global batch per process); process 0 alone reads and writes the folder and tells the others,
chunk by chunk, which pairs to score.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from umr_jax.data import files, formats
from umr_jax.data.languages import KNOWN_LANGUAGES
from umr_jax.data.validation import RecordError, SkippedRecords, validated
from umr_jax.errors import InputError
from umr_jax.labeling.scorer import ScorePair
from umr_jax.stages.folder import StageFolder, file_sha256

SHARDS_NAME = "pseudo_labels.jsonl"  # shards are pseudo_labels-NNNNN-of-NNNNN.jsonl
STATE = "state.json"
MANIFEST = "manifest.json"
STATE_FORMAT = "umr-jax-pseudo-labels-state"
MANIFEST_FORMAT = "umr-jax-pseudo-labels"
VERSION = 1
NO_CTXS = "no ctxs"  # the skip reason (SkippedRecords) of a question without retrieved passages
_SHARD_FILE = re.compile(r"^pseudo_labels-(\d{5})-of-(\d{5})\.jsonl$")
_ERROR_BYTES = 4096  # room for process 0's refusal message when it is broadcast to the others


# ----------------------------------------------------------------------------------------------
# The input: retrieved questions, their first top-k ctxs


def _items(path: str | os.PathLike) -> Iterator[tuple[str, int, Any]]:
    """Raw (path, line, object) items of a retrieval file: JSON lines, or a DPR JSON list when the
    first non-blank character is '['."""
    for shard in files.expand_shards(path):
        with files.open_binary(shard) as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        yield from (files.iter_json_array(shard) if head.startswith(b"[") else files.iter_jsonl(shard))


def read_retrieved(path: str | os.PathLike, *, top_k: int, skip_invalid: SkippedRecords | None = None) -> Iterator[formats.RetrievalResult]:
    """Validated retrieval results with ctxs cut to the first `top_k` (the retrieved order).

    A malformed record, a duplicate question id, or a question with no ctxs raises `RecordError`
    (`file:line: ...`), or, given `skip_invalid`, is skipped and counted there.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")

    def parse(obj: dict, where: str, line: int) -> formats.RetrievalResult:
        result = formats.parse_retrieval(obj, where, line, KNOWN_LANGUAGES)
        if not result.ctxs:
            raise RecordError(NO_CTXS, f"question {result.id!r} has no ctxs; expected at least one retrieved passage to score", where, line)
        return dataclasses.replace(result, ctxs=result.ctxs[:top_k])

    return validated(_items(path), parse, skip_invalid=skip_invalid, record_id=lambda r: r.id)


@dataclasses.dataclass(frozen=True)
class RetrievedInput:
    """What a validating pass over the retrieval file found (the questions after `skip_invalid`).

    `keys_sha256` hashes every (question id, passage id) to score, in order: two inputs with the
    same hash and the same `questions_per_chunk` cut into the same chunks.
    """

    path: str
    top_k: int
    questions: int
    pairs: int
    keys_sha256: str
    skipped: dict[str, int]  # reason -> count, with skip_invalid
    skipped_summary: tuple[str, ...] = ()  # one line per reason, naming the first skipped record


def inspect_retrieved(path: str | os.PathLike, *, top_k: int, skip_invalid: bool = False) -> RetrievedInput:
    """Read and validate the whole retrieval file once (constant memory): counts and key hash.
    Raises `InputError` on the first invalid record unless `skip_invalid`."""
    skipped = SkippedRecords() if skip_invalid else None
    digest = hashlib.sha256()
    questions = pairs = 0
    for result in read_retrieved(path, top_k=top_k, skip_invalid=skipped):
        questions += 1
        pairs += len(result.ctxs)
        digest.update(json.dumps([result.id, [c.id for c in result.ctxs]], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return RetrievedInput(os.fspath(path), top_k, questions, pairs, digest.hexdigest(),
                          dict(skipped.counts) if skipped else {}, tuple(skipped.summary_lines()) if skipped else ())


# ----------------------------------------------------------------------------------------------
# Settings: what a folder's labels were made with


def scorer_fingerprint(folder: str | os.PathLike) -> str:
    """A content fingerprint of a Hugging Face model folder, the same wherever the folder lives:
    sha256 over config.json and, per weight file, its size and 16 evenly spaced 64 KiB samples
    (cheap even for mT5-XL's 15 GB). A path that is not a folder fingerprints as its name."""
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


def _layout(retrieved: RetrievedInput, questions_per_chunk: int) -> dict[str, Any]:
    return {
        "questions": retrieved.questions,
        "pairs": retrieved.pairs,
        "keys_sha256": retrieved.keys_sha256,
        "questions_per_chunk": int(questions_per_chunk),
        "num_shards": max(1, math.ceil(retrieved.questions / questions_per_chunk)),
    }


def _read_json(path: Path, expected_format: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable ({err}); expected a {expected_format} JSON file", path) from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        raise InputError(f"not a {expected_format} file", path)
    return obj


def _write_json(path: Path, obj: dict) -> None:
    with files.AtomicFile(path) as f:
        f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def check_resumable(output: str | os.PathLike, settings: Stage1Settings) -> dict | None:
    """The folder's state when it may be resumed with `settings` (None for a new folder).

    Raises `InputError` naming every setting that differs when the folder was made with others
    (a different scorer, reduction, dtype, top-k or length limits).
    """
    if Path(output).exists() and not Path(output).is_dir():
        raise InputError("exists and is not a folder; expected the pseudo-label output folder", output)
    state_path = Path(output) / STATE
    if not state_path.exists():
        if (Path(output) / MANIFEST).exists() or any(_shard_files(Path(output))):
            raise InputError(f"holds pseudo-label shards but no {STATE}; score into a new --output folder", output)
        return None
    state = _read_json(state_path, STATE_FORMAT)
    saved = state.get("settings", {})
    current = dataclasses.asdict(settings)
    differ = [key for key in current if key != "scorer" and saved.get(key) != current[key]]
    if differ:
        def show(values: dict, key: str) -> str:
            if key == "scorer_fingerprint":  # name the scorers, not their hashes
                return f"scorer={values.get('scorer')!r} (fingerprint {str(values.get(key))[:12]})"
            return f"{key.replace('_', '-')}={values.get(key)!r}"

        raise InputError(
            f"this folder holds pseudo labels made with {', '.join(show(saved, k) for k in differ)}; "
            f"this run asks for {', '.join(show(current, k) for k in differ)}. "
            "Score into a new --output folder (or delete this one) to relabel",
            state_path,
        )
    return state


# ----------------------------------------------------------------------------------------------
# The folder


def _shard_files(output: Path) -> list[tuple[int, int, Path]]:
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


class Progress:
    """What the driver reports while it runs; the methods do nothing here. Subclass to show a
    progress bar, log, or (in tests) interrupt the run."""

    def started(self, total_pairs: int) -> None:
        """Called once before the first chunk with the number of pairs to label."""

    def resumed(self, pairs: int) -> None:
        """Called with pairs whose scores an earlier output already holds (not scored again)."""

    def scored(self, pairs: int) -> None:
        """Called after each scored batch with the number of pairs it held."""

    def shard_written(self, index: int, path: Path | None) -> None:
        """Called after chunk `index` is done (`path`: its shard, on the writing process; else None)."""


class _Coordinator:
    """Process 0 decides; the others follow. Single-process: no communication at all."""

    def __init__(self):
        import jax

        self.count = jax.process_count()
        self.is_writer = jax.process_index() == 0

    def share(self, array: np.ndarray) -> np.ndarray:
        """Process 0's `array` on every process (every process passes one of the same shape)."""
        if self.count == 1:
            return array
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.broadcast_one_to_all(array))

    def share_error(self, error: InputError | None) -> None:
        """Raise process 0's refusal on every process, or nothing when it had none."""
        if self.count == 1:
            if error is not None:
                raise error
            return
        buffer = np.zeros(_ERROR_BYTES, np.uint8)
        if error is not None:
            text = str(error).encode("utf-8")[: _ERROR_BYTES - 1] or b"error"
            buffer[: len(text)] = np.frombuffer(text, np.uint8)
        buffer = self.share(buffer)
        if error is not None:
            raise error
        if buffer.any():
            raise InputError(bytes(buffer[buffer > 0]).decode("utf-8", errors="replace"))


@dataclasses.dataclass
class _Plan:
    """Process 0's view of the folder at start: what is done, what scores can be reused."""

    state: dict
    done: set[int]
    known: dict[str, dict[str, float]]  # question id -> passage id -> score, from earlier outputs
    complete: bool


def _plan(output: Path, settings: Stage1Settings, layout: dict, retrieved: str, resume_from: str | os.PathLike | None) -> _Plan:
    state = check_resumable(output, settings)
    fresh = {"format": STATE_FORMAT, "version": VERSION, "settings": dataclasses.asdict(settings), "layout": layout, "retrieved": retrieved,
             "shards_done": [], "pairs_scored": 0, "scoring_seconds": 0.0, "runs": 0}
    if state is None or state.get("layout") != layout:
        previous = state
        state = fresh
        if previous is not None:  # an earlier chunking: its shards only contribute scores
            state.update({k: previous.get(k, fresh[k]) for k in ("pairs_scored", "scoring_seconds", "runs")})
    num_shards = layout["num_shards"]
    checksums = state.setdefault("shard_sha256", {})
    done = {i for i in state["shards_done"] if _shard_matches(shard_path(output, i, num_shards), checksums)}
    known: dict[str, dict[str, float]] = {}
    for index, count, path in _shard_files(output):
        if count == num_shards and index in done:
            continue
        _add_scores(known, formats.read_retrieval(path))
    if resume_from is not None:
        _add_scores(known, _read_any_retrieval(resume_from))
    complete = (output / MANIFEST).exists() and len(done) == num_shards
    state["shards_done"] = sorted(done)
    return _Plan(state, done, known, complete)


def _shard_matches(path: Path, checksums: dict[str, str]) -> bool:
    """A shard is done only when the state lists it with the checksum of the file under its name."""
    return path.is_file() and checksums.get(path.name) == file_sha256(path)


def _read_any_retrieval(path: str | os.PathLike) -> Iterator[formats.RetrievalResult]:
    """Retrieval results from JSON lines or a DPR JSON list (sniffed), validated."""
    return validated(_items(path), lambda obj, where, line: formats.parse_retrieval(obj, where, line, KNOWN_LANGUAGES),
                     skip_invalid=None, record_id=lambda r: r.id)


def _add_scores(known: dict[str, dict[str, float]], results: Iterable[formats.RetrievalResult]) -> None:
    for result in results:
        scores = known.setdefault(result.id, {})
        for ctx in result.ctxs:
            scores[ctx.id] = ctx.score


def _chunks(results: Iterable[formats.RetrievalResult], size: int) -> Iterator[list[formats.RetrievalResult]]:
    chunk: list[formats.RetrievalResult] = []
    for result in results:
        chunk.append(result)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------------------------
# The driver


def score_retrieved(
    retrieved: str | os.PathLike,
    output: str | os.PathLike,
    scorer,
    *,
    top_k: int = 100,
    questions_per_chunk: int = 256,
    resume_from: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    retrieved_input: RetrievedInput | None = None,
    progress: Progress | None = None,
) -> dict:
    """Pseudo-label every question of `retrieved` into the folder `output`.

    Returns the manifest (on process 0; `{}` on the others), its `last_run` describing this call.

    `scorer` is a `QuestionLikelihoodScorer` (anything with its `name`, `reduction`, `config.dtype`,
    `max_source_length`, `max_target_length` and `score(pairs, progress)`). Chunks of
    `questions_per_chunk` questions are scored together (the scorer buckets and batches their
    pairs across questions), and each chunk's shard is written atomically once it is complete.

    Resumes a folder made with the same settings, scoring only the (question id, passage id)
    pairs not found in its finished shards or in `resume_from` (a retrieval or DPR JSON file
    with LM scores, e.g. a previous partial output; its scores are taken as they are). A folder
    whose labels are complete is returned as it is. Raises `InputError` for invalid input (see
    `read_retrieved`) and for a folder made with other settings, and `FloatingPointError` (before
    writing the chunk's shard) when the scorer returns a non-finite score.

    `retrieved_input`: the result of `inspect_retrieved(retrieved, top_k=top_k, skip_invalid=...)`
    when the caller already ran it (it is run otherwise).
    """
    if questions_per_chunk < 1:
        raise ValueError(f"questions_per_chunk must be >= 1, got {questions_per_chunk}")
    progress = progress or Progress()
    output = Path(output)
    settings = Stage1Settings.of(scorer, top_k)
    if retrieved_input is None:
        retrieved_input = inspect_retrieved(retrieved, top_k=top_k, skip_invalid=skip_invalid)
    layout = _layout(retrieved_input, questions_per_chunk)
    num_shards = layout["num_shards"]
    coordinator = _Coordinator()
    stage = StageFolder(output, "score")
    with contextlib.ExitStack() as stack:
        plan, error = None, None
        if coordinator.is_writer:
            try:
                stack.enter_context(stage.session())  # refused while another run writes here
                plan = _plan(output, settings, layout, retrieved_input.path, resume_from)
            except InputError as err:
                error = err
        coordinator.share_error(error)

        done_mask = np.zeros(num_shards, np.bool_)
        if coordinator.is_writer:
            done_mask[sorted(plan.done)] = True
        done_mask = coordinator.share(done_mask)
        if coordinator.is_writer:
            if plan.complete:
                manifest = _read_json(output / MANIFEST, MANIFEST_FORMAT)
                return {**manifest, "last_run": {"pairs_scored": 0, "pairs_resumed": manifest["pairs"], "elapsed_seconds": 0.0}}
            stage.sweep_temporaries()
            (output / MANIFEST).unlink(missing_ok=True)
            plan.state["runs"] += 1
            _write_json(output / STATE, plan.state)
        elif done_mask.all():  # nothing left to score: process 0 only writes what remains
            return {}

        known = plan.known if plan else {}
        skipped = SkippedRecords() if skip_invalid else None
        started_at, seconds, pairs_scored, pairs_resumed = time.monotonic(), 0.0, 0, 0
        progress.started(retrieved_input.pairs)
        for index, chunk in enumerate(_chunks(read_retrieved(retrieved, top_k=top_k, skip_invalid=skipped), questions_per_chunk)):
            pairs = [ScorePair((r.id, ctx.id), r.question, ctx.title, ctx.text, r.lang) for r in chunk for ctx in r.ctxs]
            if done_mask[index]:
                pairs_resumed += len(pairs)
                progress.resumed(len(pairs))
                continue
            scores = np.zeros(len(pairs), np.float32)
            needed = np.ones(len(pairs), np.bool_)
            if coordinator.is_writer:
                for j, pair in enumerate(pairs):
                    question_id, passage_id = pair.key
                    score = known.get(question_id, {}).get(passage_id)
                    if score is not None:
                        scores[j], needed[j] = score, False
            needed = coordinator.share(needed)
            if not needed.all():
                pairs_resumed += int((~needed).sum())
                progress.resumed(int((~needed).sum()))
            to_score = [pairs[j] for j in np.flatnonzero(needed)]
            if to_score:
                t0 = time.monotonic()
                scores[needed] = scorer.score(to_score, progress=progress.scored)
                seconds += time.monotonic() - t0
                bad = np.flatnonzero(~np.isfinite(scores))
                if bad.size:  # never write a shard no reader accepts
                    raise FloatingPointError(f"the scorer gave {bad.size} non-finite score(s), the first for (question id, passage id) "
                                             f"{pairs[bad[0]].key}; score with --dtype float32 to check the numerics")
                pairs_scored += len(to_score)
            path = None
            if coordinator.is_writer:
                path = shard_path(output, index, num_shards)
                formats.write_retrieval(path, _labelled(chunk, scores, settings.scorer))
                stage.keep()
                plan.state.setdefault("shard_sha256", {})[path.name] = file_sha256(path)
                for result in chunk:
                    known.pop(result.id, None)
                plan.state["shards_done"] = sorted(set(plan.state["shards_done"]) | {index})
                plan.state["pairs_scored"] += len(to_score)
                plan.state["scoring_seconds"] += seconds
                seconds = 0.0
                _write_json(output / STATE, plan.state)
            progress.shard_written(index, path)

        if not coordinator.is_writer:
            return {}
        if retrieved_input.questions == 0:  # an empty input still gets its (empty) single shard
            formats.write_retrieval(shard_path(output, 0, num_shards), [])
            plan.state["shards_done"] = [0]
            _write_json(output / STATE, plan.state)
        for index, count, path in _shard_files(output):
            if count != num_shards:
                path.unlink(missing_ok=True)  # an earlier chunking's shards, all rescored or reused by now
        state = plan.state
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": VERSION,
            **dataclasses.asdict(settings),
            "retrieved": retrieved_input.path,
            "questions": retrieved_input.questions,
            "pairs": retrieved_input.pairs,
            "skipped": retrieved_input.skipped,
            "shards": [shard_path(output, i, num_shards).name for i in range(num_shards)],
            "pairs_scored": state["pairs_scored"],
            "scoring_seconds": round(state["scoring_seconds"], 3),
            "pairs_per_second": round(state["pairs_scored"] / state["scoring_seconds"], 2) if state["scoring_seconds"] > 0 else None,
            "runs": state["runs"],
            "last_run": {"pairs_scored": pairs_scored, "pairs_resumed": pairs_resumed, "elapsed_seconds": round(time.monotonic() - started_at, 3)},
        }
        _write_json(output / MANIFEST, manifest)
        return manifest


def _labelled(chunk: Sequence[formats.RetrievalResult], scores: np.ndarray, scorer_name: str) -> Iterator[formats.RetrievalResult]:
    """The chunk's records with ctxs[*].score = the LM score, in the retrieved order."""
    position = 0
    for result in chunk:
        ctxs = tuple(dataclasses.replace(ctx, score=float(scores[position + i])) for i, ctx in enumerate(result.ctxs))
        position += len(ctxs)
        yield dataclasses.replace(result, ctxs=ctxs, scorer=scorer_name)
