"""What the demo asks about its world: XOR-TyDi-style questions with their gold information,
translated-style pairs (a native keyword query, an English passage) and WebFAQ-style pairs.
Built by `make_demo`.
"""

from __future__ import annotations

import hashlib
import random

from umr_jax.demo.names import NATIVE_SCRIPT, Name, finnish_genitive
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
from umr_jax.demo.world import Entity, World

QUESTIONS_PER_LANGUAGE = {"train": 120, "dev": 50, "test": 30}
# Share of questions (in ar, bn, ja, ko, ru, te) that write the entity name in the language's
# own script instead of Latin script. Those questions share no string with the English
# passages, as real XOR-TyDi questions mostly do not: lexical methods cannot solve them.
NATIVE_NAME_SHARE = 1 / 3
NEAR_DUPLICATE_SHARE = 0.35  # asked entities that get a distractor with a near-identical name
ENTITY_TYPE_WEIGHTS = {"person": 30, "city": 25, "company": 20, "river": 12, "mountain": 13}
WEBFAQ_PER_LANGUAGE = 50
TRANSLATED_PER_LANGUAGE = 60


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
            pairs.append({"query": query, "positive": positive, "lang": lang, "passage_lang": "en"})
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

