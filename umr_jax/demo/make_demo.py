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
  translated_pairs.jsonl                 {"query","positive","lang"}: native query, English passage
  tokenizers/mt5/                        T5/mT5-style tokenizer (pad 0, </s> 1, <unk> 2, 100 sentinels)
  tokenizers/xlmr/                       XLM-R-style tokenizer (<s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last)
  stats.json                             counts and the checks below
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import hashlib
import io
import json
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

from umr_jax.demo import WEBFAQ_LANGUAGES, english
from umr_jax.data.files import AtomicFile
from umr_jax.demo.names import NATIVE_SCRIPT, SCRIPTS, Name, NameMint, Word, finnish_genitive, CONSONANTS, VOWELS
from umr_jax.labeling import prompts
from umr_jax.demo.templates import (
    ATTRIBUTES,
    FAQ_ANSWERS,
    FAQ_ATTRIBUTES,
    FAQ_QUESTION_TYPE,
    FAQ_TOPIC,
    LANGUAGES,
    QUERY_KEYWORDS,
    QUESTIONS,
)

SEED = 20240317
QUESTIONS_PER_LANGUAGE = {"train": 120, "dev": 50, "test": 30}
# Share of questions (in ar, bn, ja, ko, ru, te) that write the entity name in the language's
# own script instead of Latin script. Those questions share no string with the English
# passages, as real XOR-TyDi questions mostly do not: lexical methods cannot solve them.
NATIVE_NAME_SHARE = 1 / 3
NEAR_DUPLICATE_SHARE = 0.35  # asked entities that get a distractor with a near-identical name
ENTITY_TYPE_WEIGHTS = {"person": 30, "city": 25, "company": 20, "river": 12, "mountain": 13}
YEAR_CAP = 4  # no year is the fact of more than this many entities
MAX_ANSWER_PASSAGES = 4  # checked: no answer string occurs in more passages than this
WEBFAQ_PER_LANGUAGE = 50
TRANSLATED_PER_LANGUAGE = 60
VOCAB_SIZE = 3000  # pieces; see `seed_pieces` for why not 8k (the text has ~10k distinct words)
EXTRA_IDS = 100


@dataclasses.dataclass
class Fact:
    """One attribute value: `text` is the answer string as it appears in the passage."""

    text: str
    name: Name | None = None  # set when the value is a coined name (transliterable)
    prefix: str = ""  # English words around a name value ("Lake "), kept in answers

    def native(self, script: str) -> str:
        return self.text if self.name is None else self.name.native(script)


@dataclasses.dataclass
class Entity:
    kind: str
    name: Name
    title: str
    split: str | None  # the split whose question asks about it; None for distractors
    facts: dict[str, Fact]
    ctx: dict[str, str]
    gender: str = "m"
    passages: list[tuple[str, tuple[str, ...]]] = dataclasses.field(default_factory=list)  # (text, facts in it)
    passage_ids: list[str] = dataclasses.field(default_factory=list)

    def gold_passage_ids(self, attribute: str) -> list[str]:
        return [pid for pid, (_, facts) in zip(self.passage_ids, self.passages) if attribute in facts]


@dataclasses.dataclass
class Country:
    name: str
    capital: str
    regions: list[str]
    ranges: list[str]


class World:
    """The fictional world: countries, entities, their passages; all drawn from one seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.mint = NameMint(random.Random(seed + 1), reserved=english.filler_vocabulary() + ("kilometres", "metres"))
        self.year_counts: collections.Counter[int] = collections.Counter()
        self.used_numbers: set[str] = set()
        self.countries = []
        for _ in range(12):
            self.countries.append(
                Country(
                    name=self._word(3),
                    capital=self._word(3),
                    regions=[self._word(3) for _ in range(4)],
                    ranges=[self._word(3) for _ in range(2)],
                )
            )
        self.given_names = [self.mint.word(2, 3) for _ in range(160)]
        self.entities: list[Entity] = []

    # -- value sources ---------------------------------------------------------------------
    def _word(self, syllables: int = 3) -> str:
        return self.mint.word(syllables, syllables).latin

    def _person_name(self) -> Name:
        return Name((self.rng.choice(self.given_names), self.mint.word(3, 3)))

    def _year(self, lo: int, hi: int) -> int:
        for _ in range(1000):
            year = self.rng.randint(lo, hi)
            if self.year_counts[year] < YEAR_CAP:
                self.year_counts[year] += 1
                return year
        raise RuntimeError(f"no year left in {lo}-{hi} under the cap of {YEAR_CAP}")

    def _unique_number(self, lo: int, hi: int, fmt: str) -> str:
        for _ in range(10_000):
            text = fmt.format(self.rng.randint(lo, hi))
            if text not in self.used_numbers:
                self.used_numbers.add(text)
                return text
        raise RuntimeError(f"no unique number left in {lo}-{hi}")

    def _place(self) -> tuple[Country, dict[str, str]]:
        country = self.rng.choice(self.countries)
        ctx = {
            "country": country.name,
            "capital": country.capital,
            "region": self.rng.choice(country.regions),
            "region2": self.rng.choice(self.rng.choice(self.countries).regions),
            "range": self.rng.choice(country.ranges),
            "product": self.rng.choice(english.PRODUCTS),
            "landmark": self.rng.choice(english.LANDMARKS),
            "landscape": self.rng.choice(english.LANDSCAPES),
            "industry": self.rng.choice(english.INDUSTRIES),
        }
        ctx["a_industry"] = english.with_article(ctx["industry"])
        return country, ctx

    # -- entities ----------------------------------------------------------------------------
    def new_entity(self, kind: str, split: str | None, name: Name | None = None) -> Entity:
        make = getattr(self, f"_new_{kind}")
        entity = make(split, name)
        self._write_passages(entity)
        self.entities.append(entity)
        return entity

    def _new_person(self, split, name):
        name = name or self._person_name()
        _, ctx = self._place()
        gender = self.rng.choice("mf")
        profession = self.rng.choice(list(english.PROFESSIONS))
        birth = self._year(1100, 1960)
        age = self._year(birth + 30, min(birth + 95, 2015)) - birth
        spouse = self._person_name()
        village = self.mint.word(3, 3)
        ctx.update(
            name=name.latin, last=name.last, profession=profession,
            work_plural=english.PROFESSIONS[profession][1],
            Pronoun="He" if gender == "m" else "She", pronoun="he" if gender == "m" else "she",
            poss="his" if gender == "m" else "her",
            trade=self.rng.choice(english.TRADES), interest=self.rng.choice(english.INTERESTS),
            subject=self.rng.choice(english.SUBJECTS), teen_age=str(self.rng.randint(14, 19)),
            age=str(age), a_profession=english.with_article(profession),
            a_spouse_profession=english.with_article(self.rng.choice(list(english.PROFESSIONS))),
        )
        facts = {
            "birth_year": Fact(str(birth)),
            "death_year": Fact(str(birth + age)),
            "birthplace": Fact(village.latin, Name((village,))),
            "spouse": Fact(spouse.latin, spouse),
        }
        return Entity("person", name, name.latin, split, facts, ctx, gender=gender)

    def _new_city(self, split, name):
        name = name or Name((self.mint.word(2, 3),))
        _, ctx = self._place()
        mayor = self._person_name()
        ctx.update(name=name.latin, origin=self.rng.choice(english.ORIGINS), policy=self.rng.choice(english.POLICIES))
        facts = {
            "founded": Fact(str(self._year(1000, 1900))),
            "population": Fact(self._unique_number(10_000, 99_999, "{:,}")),
            "mayor": Fact(mayor.latin, mayor),
        }
        return Entity("city", name, name.latin, split, facts, ctx)

    def _new_river(self, split, name):
        name = name or Name((self.mint.word(2, 3),))
        _, ctx = self._place()
        lake = self.mint.word(3, 3)
        ctx.update(name=name.latin)
        facts = {
            "length": Fact(self._unique_number(100, 999, "{} kilometres")),
            "mouth": Fact("Lake " + lake.latin, Name((lake,)), prefix="Lake "),
        }
        return Entity("river", name, f"{name.latin} River", split, facts, ctx)

    def _new_mountain(self, split, name):
        name = name or Name((self.mint.word(2, 3),))
        _, ctx = self._place()
        climber = self._person_name()
        ctx.update(name=name.latin)
        facts = {
            "height": Fact(self._unique_number(1_200, 8_800, "{:,} metres")),
            "ascent_year": Fact(str(self._year(1750, 2005))),
            "first_climber": Fact(climber.latin, climber),
        }
        return Entity("mountain", name, f"Mount {name.latin}", split, facts, ctx)

    def _new_company(self, split, name):
        name = name or Name((self.mint.word(2, 3),))
        _, ctx = self._place()
        founder = self._person_name()
        hq = self.mint.word(3, 3)
        ctx.update(
            name=name.latin, product=english.COMPANY_PRODUCTS[ctx["industry"]],
            employees=f"{self.rng.randint(3, 95) * 100:,}", n_countries=str(self.rng.randint(5, 60)),
        )
        facts = {
            "founded": Fact(str(self._year(1700, 2010))),
            "founder": Fact(founder.latin, founder),
            "headquarters": Fact(hq.latin, Name((hq,))),
        }
        return Entity("company", name, name.latin, split, facts, ctx)

    def near_duplicate(self, entity: Entity) -> Entity | None:
        """A distractor of the same type whose name differs by one vowel (or, for a person,
        the same family name with another given name)."""
        words = entity.name.words
        if entity.kind == "person" and self.rng.random() < 0.5:
            others = [g for g in self.given_names if g != words[0]]
            name = Name((self.rng.choice(others), words[-1]))
        else:
            variant = self.mint.near_duplicate(words[-1])
            if variant is None:
                return None
            name = Name(words[:-1] + (variant,))
        return self.new_entity(entity.kind, None, name)

    # -- passages ----------------------------------------------------------------------------
    def _write_passages(self, entity: Entity) -> None:
        ctx = dict(entity.ctx)
        ctx.update({attr: fact.text for attr, fact in entity.facts.items()})
        if entity.kind == "person":
            ctx.update(birth_year=entity.facts["birth_year"].text, birthplace=entity.facts["birthplace"].text)
        pick = self.rng.choice
        compose = lambda facts, fillers: english.compose(self.rng, facts, fillers, ctx)  # noqa: E731
        passages: list[tuple[str, tuple[str, ...]]] = []
        if entity.kind == "person":
            passages.append((compose([pick(english.PERSON_EARLY_FACTS)], english.PERSON_EARLY_FILLERS), ("birth_year", "birthplace")))
            late = [pick(english.PERSON_LATE_FACTS["spouse"]), pick(english.PERSON_LATE_FACTS["death_year"])]
            passages.append((compose(late, english.PERSON_LATE_FILLERS), ("spouse", "death_year")))
        elif entity.kind == "city":
            passages.append((compose([pick(english.CITY_HISTORY_FACTS)], english.CITY_HISTORY_FILLERS), ("founded",)))
            today = [pick(english.CITY_TODAY_FACTS["population"]), pick(english.CITY_TODAY_FACTS["mayor"])]
            passages.append((compose(today, english.CITY_TODAY_FILLERS), ("population", "mayor")))
        elif entity.kind == "river":
            facts = [pick(english.RIVER_FACTS["length"]), pick(english.RIVER_FACTS["mouth"])]
            passages.append((compose(facts, english.RIVER_FILLERS), ("length", "mouth")))
            if self.rng.random() < 0.5:
                passages.append((compose([], english.RIVER_NATURE), ()))
        elif entity.kind == "mountain":
            height = pick(english.MOUNTAIN_FACTS["height"])
            ascent = [pick(english.MOUNTAIN_FACTS["ascent_year"]), pick(english.MOUNTAIN_FACTS["first_climber"])]
            if self.rng.random() < 0.5:
                passages.append((compose([height], english.MOUNTAIN_FILLERS), ("height",)))
                passages.append((compose(ascent, english.MOUNTAIN_ROUTES), ("ascent_year", "first_climber")))
            else:
                passages.append((compose([height, *ascent], english.MOUNTAIN_FILLERS), ("height", "ascent_year", "first_climber")))
        elif entity.kind == "company":
            origin = [pick(english.COMPANY_ORIGIN_FACTS["founded"]), pick(english.COMPANY_ORIGIN_FACTS["founder"])]
            passages.append((compose(origin, english.COMPANY_ORIGIN_FILLERS), ("founded", "founder")))
            hq = [pick(english.COMPANY_TODAY_FACTS["headquarters"])]
            passages.append((compose(hq, english.COMPANY_TODAY_FILLERS), ("headquarters",)))
        for text, facts in passages:
            for attr in facts:
                if entity.facts[attr].text not in text:
                    raise RuntimeError(f"fact {attr}={entity.facts[attr].text!r} missing from its passage {text!r}")
        entity.passages = passages


# ---------------------------------------------------------------------------------------------
# Questions and pairs


def _question_id(*parts: object) -> str:
    """A signed 64-bit integer as a string, like XOR-TyDi's ids, from a stable hash."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return str(int.from_bytes(digest[:8], "big", signed=True))


def _name_in(lang: str, name: Name, native: bool) -> str:
    return name.native(NATIVE_SCRIPT[lang]) if native else name.latin


def _fill(template, lang: str, entity: Entity, native: bool, answer: str | None = None) -> str:
    if isinstance(template, dict):
        template = template[entity.gender]
    x = _name_in(lang, entity.name, native)
    fields = {"X": x, "X_gen": finnish_genitive(x) if lang == "fi" else x}
    if answer is not None:
        fields["A"] = answer
    return template.format(**fields)


def _uses_native_name(rng: random.Random, lang: str) -> bool:
    return lang in NATIVE_SCRIPT and rng.random() < NATIVE_NAME_SHARE


def make_questions(world: World) -> dict[str, list[dict]]:
    """Per split, question records with their gold information (written to two files)."""
    rng = random.Random(world.rng.getrandbits(64))
    kinds = list(ENTITY_TYPE_WEIGHTS)
    weights = [ENTITY_TYPE_WEIGHTS[k] for k in kinds]
    out: dict[str, list[dict]] = {}
    for split, per_language in QUESTIONS_PER_LANGUAGE.items():
        records = []
        for lang in LANGUAGES:
            for k in range(per_language):
                kind = rng.choices(kinds, weights)[0]
                entity = world.new_entity(kind, split)
                if rng.random() < NEAR_DUPLICATE_SHARE:
                    world.near_duplicate(entity)
                attribute = rng.choice(ATTRIBUTES[kind])
                native = _uses_native_name(rng, lang)
                template = rng.choice(QUESTIONS[lang][f"{kind}.{attribute}"])
                records.append(
                    {
                        "id": _question_id("umr-jax-demo", split, lang, k),
                        "question": _fill(template, lang, entity, native),
                        "answers": [entity.facts[attribute].text],
                        "lang": lang,
                        "_entity": entity,
                        "_attribute": attribute,
                        "_native": native,
                    }
                )
        rng.shuffle(records)
        out[split] = records
    return out


def make_translated_pairs(world: World, rng: random.Random) -> list[dict]:
    """mMARCO-like pairs: a keyword query in a non-English language, an English passage.
    Only entities of the train split are used, so no dev/test answer leaks into training."""
    train = [e for e in world.entities if e.split == "train"]
    pairs: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for lang in LANGUAGES:
        count = 0
        while count < TRANSLATED_PER_LANGUAGE:
            entity = rng.choice(train)
            attribute = rng.choice(ATTRIBUTES[entity.kind])
            native = _uses_native_name(rng, lang)
            query = _fill(QUERY_KEYWORDS[lang][f"{entity.kind}.{attribute}"], lang, entity, native)
            passage_index = next(i for i, (_, facts) in enumerate(entity.passages) if attribute in facts)
            positive = entity.passages[passage_index][0]
            if (query, positive) in seen:
                continue
            seen.add((query, positive))
            pairs.append({"query": query, "positive": positive, "lang": lang})
            count += 1
    return pairs


def make_webfaq(world: World, rng: random.Random) -> dict[str, list[dict]]:
    """WebFAQ-like pairs per language: an FAQ question and its answer, both in that language,
    about train-split companies and towns, as their own (fictional) FAQ pages would state them."""
    train = [e for e in world.entities if e.split == "train" and e.kind in FAQ_TOPIC]
    out: dict[str, list[dict]] = {}
    for lang in LANGUAGES:
        rows: list[dict] = []
        seen: set[str] = set()
        while len(rows) < WEBFAQ_PER_LANGUAGE:
            entity = rng.choice(train)
            attributes = [a for a in FAQ_ATTRIBUTES if a.startswith(entity.kind + ".")]
            key = rng.choice(attributes)
            fact = entity.facts[key.split(".")[1]]
            native = _uses_native_name(rng, lang)
            answer_value = fact.prefix + fact.native(NATIVE_SCRIPT[lang]) if native and fact.name else fact.text
            site = entity.name.latin.lower()
            origin = f"https://www.{site}.example" if entity.kind == "company" else f"https://visit-{site}.example"
            url = f"{origin}/{lang}/faq"
            question = _fill(rng.choice(QUESTIONS[lang][key]), lang, entity, native)
            faq_id = hashlib.sha256(f"{url}\n{question}".encode()).hexdigest()[:32]
            if faq_id in seen:  # one FAQ page does not ask the same question twice
                continue
            seen.add(faq_id)
            rows.append(
                {
                    "id": faq_id,
                    "origin": origin,
                    "url": url,
                    "question": question,
                    "answer": _fill(FAQ_ANSWERS[lang][key], lang, entity, native, answer=answer_value),
                    "semantic_similarity_score": round(rng.uniform(0.70, 0.95), 4),
                    "topic": FAQ_TOPIC[entity.kind],
                    "question_type": FAQ_QUESTION_TYPE[key],
                }
            )
        out[lang] = rows
    return out


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
