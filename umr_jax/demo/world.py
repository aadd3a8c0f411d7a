"""The demo's fictional world: countries, entities (people, cities, rivers, mountains,
companies) with their facts, and the English passages that state those facts, all drawn from
one seed. Built by `make_demo`; `questions` asks about it.
"""

from __future__ import annotations

import collections
import dataclasses
import random

from umr_jax.demo import english
from umr_jax.demo.names import Name, NameMint

YEAR_CAP = 4  # no year is the fact of more than this many entities


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
