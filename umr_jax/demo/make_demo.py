"""Builds the embedded demo corpus, deterministically: `python -m umr_jax.demo.make_demo --output DIR`.

The committed copy lives in `umr_jax/demo/corpus/`; running this script with the same
library versions (sentencepiece, tokenizers, transformers, pyarrow) rewrites it byte for byte.
What the data is and is not: see the `umr_jax.demo` docstring and docs/demo_data.md.

Layout of DIR:
  questions/{train,dev,test}.jsonl       XOR-TyDi style {"id","question","answers","lang"}
  questions/{train,dev,test}_gold.jsonl  per question: entity, attribute, name script, gold passage ids
  questions/{dev,test}_qrels.tsv         BEIR qrels: header "query-id<TAB>corpus-id<TAB>score", score 1
  passages.tsv                           DPR TSV, header "id<TAB>text<TAB>title"
  webfaq/{ara,ben,fin,jpn,kor,rus,tel}.parquet   WebFAQ schema, one file per language
  translated_pairs.jsonl                 {"query","positive","lang","passage_lang"}: native query, English passage
  tokenizers/mt5/                        T5/mT5-style tokenizer (pad 0, </s> 1, <unk> 2, 100 sentinels)
  tokenizers/xlmr/                       XLM-R-style tokenizer (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last)
  stats.json                             counts and the checks below

Parts: `world` (the fictional world and its passages), `questions` (the questions and pairs
asked about it); this module trains the tokenizers, checks the corpus's guarantees and writes it.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from umr_jax.demo import WEBFAQ_LANGUAGES
from umr_jax.data.files import AtomicFile
from umr_jax.demo.names import SCRIPTS, Name, Word, CONSONANTS, VOWELS
from umr_jax.demo.questions import QUESTIONS_PER_LANGUAGE, make_questions, make_translated_pairs, make_webfaq
from umr_jax.demo.templates import FAQ_ANSWERS, LANGUAGES, QUERY_KEYWORDS, QUESTIONS
from umr_jax.demo.world import World
from umr_jax.labeling import prompts

SEED = 20240317
MAX_ANSWER_PASSAGES = 4  # checked: no answer string occurs in more passages than this
VOCAB_SIZE = 3000  # pieces; see `seed_pieces` for why not 8k (the text has ~10k distinct words)
EXTRA_IDS = 100


# ---------------------------------------------------------------------------------------------
# Tokenizers


def required_characters() -> str:
    """Every character the templates and transliteration tables can produce, so that the
    tokenizer covers dev/test questions it was not trained on."""
    chars: set[str] = set()
    for table in (QUESTIONS, QUERY_KEYWORDS, FAQ_ANSWERS):
        for per_lang in table.values():
            for templates in per_lang.values():
                items = templates if isinstance(templates, tuple) else (templates,)
                for t in items:
                    for s in t.values() if isinstance(t, dict) else (t,):
                        chars.update(s.replace("{X}", "").replace("{X_gen}", "").replace("{A}", ""))
    for c in CONSONANTS:
        for v in VOWELS:
            for coda in ("", "n"):
                name = Name((Word(((c, v, coda),)),))
                for script in SCRIPTS:
                    chars.update(name.native(script))
                chars.update(name.latin + name.latin.lower())
    chars.update("0123456789,.-() ")
    chars.update("".join(prompt_sentences()))
    chars.discard(" ")
    return "".join(sorted(chars))


def prompt_sentences() -> list[str]:
    """The scorer's prompt frame in every demo language (UMR's "Passage: ... Please write a
    question based on this passage in <language>." and "Question: "), so that the tokenizer
    knows the prompt's words and characters instead of spelling them out or mapping ':' and
    'Q' to <unk>."""
    return [prompts.scorer_input("", "", lang).strip() for lang in LANGUAGES] + [prompts.scorer_target("").strip()]


def seed_pieces(sentences: list[str], is_name: Callable[[str], bool]) -> list[tuple[str, int]]:
    """Candidate pieces for the unigram trainer, best first: every substring (up to 16
    characters) of every whitespace word, with "▁" marking the word start, weighted by the
    word's count; coined names contribute only substrings of up to 3 characters.

    Why not sentencepiece's own seeds: on this templated text its suffix-array seeding never
    proposes frequent words such as "▁was" or "▁The" (they only occur inside longer repeats),
    and whole coined names crowd out everything else. With these seeds, common words become
    whole pieces and names split into syllable pieces shared by many names, as rare names do
    in real multilingual vocabularies; a small model can then learn to copy names piece by piece.
    """
    words = collections.Counter(word for sentence in sentences for word in sentence.split())
    scores: collections.Counter[str] = collections.Counter()
    for word, count in words.items():
        token = "\u2581" + word
        longest = 3 if is_name(word) else 16
        for i in range(len(token)):
            for j in range(i + 2, min(len(token), i + longest) + 1):
                scores[token[i:j]] += count
    return sorted(scores.items(), key=lambda kv: (-kv[1] * len(kv[0]), kv[0]))


def train_sentencepiece(sentences: list[str], is_name: Callable[[str], bool]) -> bytes:
    """A unigram sentencepiece model in mT5's id layout (pad 0, </s> 1, <unk> 2, no <s>).

    Deterministic: explicit seed pieces (`seed_pieces`), one thread, no sampling or
    shuffling of the input, fixed options."""
    import sentencepiece as spm

    model = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        seeds_file = Path(tmp) / "seeds.tsv"
        seeds_file.write_text("".join(f"{piece}\t{count}\n" for piece, count in seed_pieces(sentences, is_name)), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="unigram",
            vocab_size=VOCAB_SIZE,
            seed_sentencepieces_file=str(seeds_file),
            character_coverage=1.0,
            required_chars=required_characters(),
            normalization_rule_name="identity",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=8192,
            minloglevel=2,
        )
    from sentencepiece import sentencepiece_model_pb2

    # The model records its training options; drop the temp path so the bytes are reproducible.
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    proto.trainer_spec.seed_sentencepieces_file = "seeds.tsv"
    return proto.SerializeToString(deterministic=True)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_tokenizers(root: Path, spm_model: bytes) -> None:
    """`root/mt5` (T5Tokenizer: spiece.model + tokenizer.json) and `root/xlmr` (XLMRobertaTokenizer:
    tokenizer.json), both from the same sentencepiece pieces, loadable offline by AutoTokenizer."""
    from transformers import T5Tokenizer, XLMRobertaTokenizer

    sentinels = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spm_model)
        (Path(tmp) / "sentencepiece.bpe.model").write_bytes(spm_model)
        t5 = T5Tokenizer.from_pretrained(tmp, extra_ids=EXTRA_IDS)
        xlmr = XLMRobertaTokenizer.from_pretrained(tmp)
        t5_json = t5.backend_tokenizer.to_str(pretty=True).encode("utf-8")
        xlmr_json = xlmr.backend_tokenizer.to_str(pretty=True).encode("utf-8")

    mt5_dir = root / "mt5"
    _write(mt5_dir / "spiece.model", spm_model)
    _write(mt5_dir / "tokenizer.json", t5_json)
    t5_special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": sentinels}
    _write(mt5_dir / "special_tokens_map.json", _json_bytes(t5_special))
    _write(
        mt5_dir / "tokenizer_config.json",
        _json_bytes(
            {
                "tokenizer_class": "T5Tokenizer",
                **t5_special,
                "extra_ids": EXTRA_IDS,
                "model_max_length": 512,
                "clean_up_tokenization_spaces": False,
            }
        ),
    )
    xlmr_dir = root / "xlmr"
    _write(xlmr_dir / "tokenizer.json", xlmr_json)
    xlmr_special = {
        "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    }
    _write(xlmr_dir / "special_tokens_map.json", _json_bytes(xlmr_special))
    _write(
        xlmr_dir / "tokenizer_config.json",
        _json_bytes(
            {
                "tokenizer_class": "XLMRobertaTokenizer",
                **xlmr_special,
                "model_max_length": 512,
                "clean_up_tokenization_spaces": False,
            }
        ),
    )


# ---------------------------------------------------------------------------------------------
# Writing


def _write(path: Path, data: bytes) -> None:
    """Atomic write (`AtomicFile`: a temp file in the same folder, then rename), with the mode any
    new file gets under the umask."""
    with AtomicFile(path) as f:
        f.write(data)


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _tsv_bytes(rows: list[tuple[str, str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(("id", "text", "title"))
    for row in rows:
        for field in row:
            if any(c in field for c in '\t\n\r"'):
                raise RuntimeError(f"passage field needs quoting, which DPR readers may not expect: {field!r}")
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def _parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()), ("origin", pa.string()), ("url", pa.string()), ("question", pa.string()),
            ("answer", pa.string()), ("semantic_similarity_score", pa.float32()), ("topic", pa.string()),
            ("question_type", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def _answer_passage_counts(questions: dict[str, list[dict]], passage_texts: list[str]) -> dict[str, int]:
    """For every distinct answer string, the number of passages containing it (raw substring)."""
    answers = sorted({a for records in questions.values() for r in records for a in r["answers"]})
    return {answer: sum(1 for text in passage_texts if answer in text) for answer in answers}


def build(output: Path, seed: int = SEED, tokenizers: bool = True) -> dict:
    """Generates the corpus into `output` (created if missing; files are overwritten) and
    returns its statistics. Raises RuntimeError if a guarantee of the corpus does not hold."""
    world = World(seed)
    questions = make_questions(world)
    pair_rng = random.Random(seed + 2)
    translated = make_translated_pairs(world, pair_rng)
    webfaq = make_webfaq(world, pair_rng)

    # Passage ids: entities in a seeded random order, the passages of one entity consecutive
    # (as DPR's 100-word chunks of one article are).
    order = list(range(len(world.entities)))
    random.Random(seed + 3).shuffle(order)
    rows = []
    for index in order:
        entity = world.entities[index]
        entity.passage_ids = []
        for text, _ in entity.passages:
            pid = str(len(rows) + 1)
            entity.passage_ids.append(pid)
            rows.append((pid, text, entity.title))
    passage_texts = [text for _, text, _ in rows]

    # Checks: every answer in its gold passage; no answer in more than MAX_ANSWER_PASSAGES passages.
    gold = {}
    for split, records in questions.items():
        gold[split] = []
        for r in records:
            entity, attribute = r["_entity"], r["_attribute"]
            ids = entity.gold_passage_ids(attribute)
            if not ids:
                raise RuntimeError(f"question {r['id']} has no gold passage")
            for pid in ids:
                if r["answers"][0] not in rows[int(pid) - 1][1]:
                    raise RuntimeError(f"answer {r['answers'][0]!r} not in gold passage {pid}")
            gold[split].append(
                {
                    "id": r["id"], "lang": r["lang"], "entity": entity.title, "entity_type": entity.kind,
                    "attribute": attribute, "name_script": "native" if r["_native"] else "latin",
                    "gold_passage_ids": ids,
                }
            )
    answer_counts = _answer_passage_counts(questions, passage_texts)
    worst = max(answer_counts.values())
    if worst > MAX_ANSWER_PASSAGES:
        bad = [a for a, c in answer_counts.items() if c > MAX_ANSWER_PASSAGES]
        raise RuntimeError(f"answers found in more than {MAX_ANSWER_PASSAGES} passages: {bad[:10]}")

    public = {split: [{k: r[k] for k in ("id", "question", "answers", "lang")} for r in records] for split, records in questions.items()}
    for split in QUESTIONS_PER_LANGUAGE:
        _write(output / "questions" / f"{split}.jsonl", _jsonl_bytes(public[split]))
        _write(output / "questions" / f"{split}_gold.jsonl", _jsonl_bytes(gold[split]))
        if split != "train":
            qrels = "query-id\tcorpus-id\tscore\n"
            qrels += "".join(f"{g['id']}\t{pid}\t1\n" for g in gold[split] for pid in g["gold_passage_ids"])
            _write(output / "questions" / f"{split}_qrels.tsv", qrels.encode())
    _write(output / "passages.tsv", _tsv_bytes(rows))
    _write(output / "translated_pairs.jsonl", _jsonl_bytes(translated))
    for lang, faq_rows in webfaq.items():
        _write(output / "webfaq" / f"{WEBFAQ_LANGUAGES[lang]}.parquet", _parquet_bytes(faq_rows))

    if tokenizers:
        sentences = [title for title in sorted({t for _, _, t in rows})] + passage_texts
        sentences += [r["question"] for r in public["train"]]
        sentences += [p["query"] for p in translated]
        sentences += [x for rows_ in webfaq.values() for r in rows_ for x in (r["question"], r["answer"])]
        sentences += prompt_sentences() * 50  # as frequent as a common template, so its words become pieces
        is_name = lambda word: any(world.mint.contains_minted(run) for run in re.findall(r"[A-Za-z]+", word))  # noqa: E731
        write_tokenizers(output / "tokenizers", train_sentencepiece(sentences, is_name))

    n_words = [len(t.split()) for t in passage_texts]
    stats = {
        "seed": seed,
        "questions": {
            split: {lang: sum(1 for r in public[split] if r["lang"] == lang) for lang in LANGUAGES}
            for split in QUESTIONS_PER_LANGUAGE
        },
        "native_script_questions": {
            split: sum(1 for g in gold[split] if g["name_script"] == "native") for split in QUESTIONS_PER_LANGUAGE
        },
        "entities": dict(sorted(collections.Counter(e.kind for e in world.entities).items())),
        "asked_entities": sum(1 for e in world.entities if e.split is not None),
        "distractor_entities": sum(1 for e in world.entities if e.split is None),
        "passages": len(rows),
        "passage_words": {"min": min(n_words), "mean": round(sum(n_words) / len(n_words), 1), "max": max(n_words)},
        "max_passages_per_answer": worst,
        "webfaq_pairs": {WEBFAQ_LANGUAGES[lang]: len(v) for lang, v in webfaq.items()},
        "translated_pairs": len(translated),
        "vocab_size": VOCAB_SIZE if tokenizers else None,
    }
    _write(output / "stats.json", _json_bytes(stats))
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m umr_jax.demo.make_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path, help="folder to write the corpus into")
    parser.add_argument("--seed", type=int, default=SEED, help="world seed (the committed corpus uses the default)")
    args = parser.parse_args(argv)
    stats = build(args.output, seed=args.seed)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
