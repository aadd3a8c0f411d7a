"""English passage templates of the demo collection (Wikipedia-like, 60-110 words each).

Every entity type has fact sentences (each carries one answer verbatim) and filler sentences
(shared attribute vocabulary: every town has a mayor and a population, every river a length),
so passages about other entities of the same type are real distractors. Fillers repeat the
entity name, as Wikipedia does, which is what lets a span-corruption-trained model learn to
copy names from passage to question.
"""

from __future__ import annotations

import random

MIN_WORDS = 60
MAX_WORDS = 110

PROFESSIONS = {
    "painter": ("painting", "paintings"),
    "composer": ("composition", "compositions"),
    "poet": ("poem", "poems"),
    "engineer": ("bridge design", "bridge designs"),
    "botanist": ("plant survey", "plant surveys"),
    "architect": ("building", "buildings"),
    "sculptor": ("sculpture", "sculptures"),
    "physician": ("medical study", "medical studies"),
    "astronomer": ("star catalogue", "star catalogues"),
    "cartographer": ("map", "maps"),
    "novelist": ("novel", "novels"),
    "photographer": ("photograph", "photographs"),
    "violinist": ("recording", "recordings"),
    "chemist": ("paper on dyes", "papers on dyes"),
}
INTERESTS = (
    "light and colour", "folk songs", "river landscapes", "mechanics", "mountain plants",
    "old maps", "the night sky", "coastal villages", "city life", "church music", "family histories",
)
SUBJECTS = ("drawing", "mathematics", "music theory", "natural history", "engineering", "languages", "medicine", "physics")
TRADES = ("weaver", "fisherman", "carpenter", "teacher", "farmer", "miller", "printer", "merchant")
LANDSCAPES = ("hills", "lakes", "forests", "marshes", "vineyards", "meadows", "cliffs")
ORIGINS = (
    "a trading post", "a fishing village", "a fortified market", "a mining settlement",
    "a river crossing", "a monastery estate", "a salt works", "a harbour for grain ships",
)
PRODUCTS = ("wool", "salt", "timber", "glass", "copper", "wine", "cheese", "linen", "paper", "amber")
LANDMARKS = ("old stone bridge", "clock tower", "covered market", "harbour", "cathedral", "town hall", "castle ruins")
POLICIES = (
    "expand the railway station", "restore the old harbour", "build a new public library",
    "improve the water supply", "protect the green spaces", "renovate the market square",
)
INDUSTRIES = (
    "ceramics", "shipping", "textiles", "optics", "paper", "brewing", "machine tools",
    "printing", "chemicals", "food processing", "rail equipment", "furniture",
)
COMPANY_PRODUCTS = {
    "ceramics": "tableware", "shipping": "freight services", "textiles": "fabrics", "optics": "lenses",
    "paper": "writing paper", "brewing": "beer", "machine tools": "lathes", "printing": "printed books",
    "chemicals": "dyes", "food processing": "canned food", "rail equipment": "signals", "furniture": "chairs",
}


def filler_vocabulary() -> tuple[str, ...]:
    """Every English word the templates use, so coined names can be kept distinct from them."""
    words: list[str] = []
    pools = [
        list(PROFESSIONS), [w for pair in PROFESSIONS.values() for w in pair], INTERESTS, SUBJECTS, TRADES,
        LANDSCAPES, ORIGINS, PRODUCTS, LANDMARKS, POLICIES, INDUSTRIES, list(COMPANY_PRODUCTS.values()),
        [s for group in _ALL_SENTENCES for s in group],
    ]
    for pool in pools:
        for phrase in pool:
            words.extend(w.strip(".,'") for w in phrase.replace("{", " ").replace("}", " ").split())
    return tuple(sorted(set(w for w in words if w.isalpha())))


# ---------------------------------------------------------------------------------------------
# Sentences. Fact sentences name the fact they carry; fillers carry none.

PERSON_EARLY_FACTS = (
    "{name} was {a_profession} from {country}. {Pronoun} was born in {birth_year} in the village of {birthplace}, in the {region} region.",
    "Born in {birthplace} in {birth_year}, {name} became one of the best-known {profession}s of {country}.",
    "{name} was born in {birth_year} in {birthplace}, a village in the {region} region of {country}, and became {a_profession}.",
)
PERSON_EARLY_FILLERS = (
    "{last} grew up in a family of {trade}s and showed an early interest in {interest}.",
    "As a young student, {last} attended the academy in {capital}, where {pronoun} studied {subject}.",
    "{Pronoun} later wrote that the {landscape} around {birthplace} shaped {poss} view of {interest}.",
    "Teachers remembered {last} as a quiet but determined pupil with a gift for {subject}.",
    "The family moved several times during {poss} childhood, finally settling near {capital}.",
    "At the age of {teen_age}, {last} won a regional prize for {poss} early {work_plural}.",
    "Letters from this period show that {last} was already reading widely about {interest}.",
    "An uncle who worked as a {trade} encouraged {last} to travel and to keep a diary.",
)
PERSON_LATE_FACTS = {
    "spouse": (
        "In later life {last} married {spouse}, {a_spouse_profession} from the {region2} region.",
        "{last} was married to {spouse}, {a_spouse_profession} whom {pronoun} had met in {capital}.",
    ),
    "death_year": (
        "{last} died in {death_year} at the age of {age}.",
        "{last} died in {death_year}, and {poss} papers were given to the national library of {country}.",
    ),
}
PERSON_LATE_FILLERS = (
    "{last} is best known for a series of {work_plural} inspired by {interest}.",
    "Critics have compared {poss} {work_plural} with the restrained style of the {region} school.",
    "Several of the {work_plural} of {last} are held in public collections in {country}.",
    "A street in {capital} and a small museum in the {region} region are named after {last}.",
    "During {poss} career, {last} travelled widely and taught for some years at the academy in {capital}.",
    "{Pronoun} trained a generation of younger {profession}s, many of whom became known in their own right.",
    "The first full study of the work of {name} appeared several decades after {poss} death.",
)

CITY_HISTORY_FACTS = (
    "{name} is a town in the {region} region of {country}. It was founded in {founded} as {origin}.",
    "Founded in {founded} as {origin}, {name} is one of the older towns of the {region} region of {country}.",
    "The town of {name} in {country} was founded in {founded} as {origin} on the edge of the {region} region.",
)
CITY_HISTORY_FILLERS = (
    "The old centre of {name} is known for its {landmark} and its narrow streets.",
    "For centuries the town grew on the trade in {product}, which was shipped down the coast.",
    "{name} was rebuilt after a great fire destroyed much of the market quarter.",
    "Merchants from across {country} came to {name} for its yearly {product} fair.",
    "The town walls of {name} were taken down as the town expanded, and only one gate survives.",
    "Several guild houses from the early period still stand near the {landmark}.",
    "During the wars of the period, {name} changed hands several times between rival lords.",
)
CITY_TODAY_FACTS = {
    "population": (
        "According to the most recent census, {name} has a population of {population}.",
        "{name} had a population of {population} at the last census, making it a mid-sized town of the region.",
    ),
    "mayor": (
        "The current mayor of {name} is {mayor}, who was elected on a promise to {policy}.",
        "{mayor} has served as mayor of {name} since the last municipal election.",
    ),
}
CITY_TODAY_FILLERS = (
    "Today the economy of {name} is based on {industry} and tourism.",
    "{name} is served by a regional railway line and lies on the main road to {capital}.",
    "The town has two secondary schools, a hospital and a small college.",
    "Each summer {name} hosts a music festival that draws visitors from all over {country}.",
    "The countryside around {name} is known for its {product} and its {landscape}.",
    "The town council of {name} meets in the {landmark}, which was restored in recent years.",
)

RIVER_FACTS = {
    "length": (
        "The {name} River is a river in the {region} region of {country}. It is {length} long.",
        "With a length of {length}, the {name} River is one of the main rivers of the {region} region of {country}.",
    ),
    "mouth": (
        "The {name} River rises in the {range} hills and flows into {mouth}.",
        "After passing through several market towns, the {name} River empties into {mouth}.",
    ),
}
RIVER_FILLERS = (
    "Its valley has been farmed since early times, and several mills once stood along its banks.",
    "The upper course of the {name} is narrow and fast, while the lower course is slow and wide.",
    "Barges carried {product} on the {name} River until the railway reached the region.",
    "Floods on the {name} River were common before dams were built in its upper valley.",
    "A walking trail follows the {name} River through the {landscape} of the {region} region.",
    "The river is known for its trout, and fishing on the {name} is popular in spring.",
)
RIVER_NATURE = (
    "The basin of the {name} River is home to otters, herons and several rare species of fish.",
    "Wetlands along the lower {name} River are protected as a nature reserve.",
    "The water of the {name} is cold and clear in its upper course, fed by snow from the {range} hills.",
    "Conservation groups in {country} have worked to restore the old meanders of the {name} River.",
    "Many tributaries join the {name} River in the {region} region, the largest from the east.",
    "Beavers returned to the {name} valley after an absence of more than a century.",
    "Scientists measure the flow of the {name} River at a station near {capital}.",
)

MOUNTAIN_FACTS = {
    "height": (
        "Mount {name} is a mountain in the {range} Range of {country}. It rises to a height of {height}.",
        "At {height}, Mount {name} is one of the highest peaks of the {range} Range in {country}.",
    ),
    "ascent_year": (
        "The first recorded ascent of Mount {name} was made in {ascent_year}.",
        "Mount {name} was first climbed in {ascent_year}, after several earlier attempts had failed.",
    ),
    "first_climber": (
        "The summit of Mount {name} was first reached by {first_climber}, who led a small party up the south ridge.",
        "{first_climber} is credited with the first ascent of Mount {name}.",
    ),
}
MOUNTAIN_FILLERS = (
    "The mountain is covered in snow for most of the year, and glaciers fill its northern valleys.",
    "Mount {name} is a popular goal for experienced climbers, although its upper slopes are steep.",
    "Shepherds from the {region} region have grazed their flocks on its lower meadows for centuries.",
    "A mountain hut below the summit of Mount {name} offers shelter to climbers attempting the ridge.",
    "On clear days the summit of Mount {name} can be seen from {capital}.",
    "The rocks of Mount {name} are mostly granite, cut by deep gullies on the western face.",
)
MOUNTAIN_ROUTES = (
    "Today the normal route up Mount {name} follows the east ridge and takes two days.",
    "Winter ascents of Mount {name} remain rare because of storms and avalanches.",
    "A cable car built near Mount {name} carries visitors to a viewpoint on its lower slopes.",
    "Rescue teams in the {region} region train every spring on the slopes of Mount {name}.",
    "Several new routes on the north face of Mount {name} were opened by climbers from {country}.",
    "The forests below Mount {name} are home to deer, lynx and golden eagles.",
)

COMPANY_ORIGIN_FACTS = {
    "founded": (
        "{name} is {a_industry} company from {country}, founded in {founded}.",
        "{name} was founded in {founded} as a small {industry} workshop in the {region} region of {country}.",
    ),
    "founder": (
        "The company was started by {founder}, who ran it for many years.",
        "{founder} founded {name} and led it through its first decades.",
    ),
}
COMPANY_ORIGIN_FILLERS = (
    "In its early years {name} supplied {product} to customers in the {region} region.",
    "The company grew quickly after it won a contract with the state railways of {country}.",
    "{name} was run by the founding family for several decades before it became a public company.",
    "The first workshop of {name} stood near the {landmark} in {capital}.",
    "Early catalogues of {name} show a small range of {product} sold mostly by post.",
)
COMPANY_TODAY_FACTS = {
    "headquarters": (
        "The headquarters of {name} are in {headquarters}, where the company also runs its largest factory.",
        "{name} is headquartered in {headquarters} and employs about {employees} people.",
    ),
}
COMPANY_TODAY_FILLERS = (
    "Today {name} sells its {product} in more than {n_countries} countries.",
    "The company has invested in research and opened a design centre in {capital}.",
    "{name} is one of the largest employers in the {region} region.",
    "In recent years {name} has bought several smaller firms in the {industry} sector.",
    "The annual report of {name} lists {product} as its most important line of business.",
    "{name} has won several national awards for the quality of its {product}.",
)

_ALL_SENTENCES = (
    PERSON_EARLY_FACTS, PERSON_EARLY_FILLERS, *PERSON_LATE_FACTS.values(), PERSON_LATE_FILLERS,
    CITY_HISTORY_FACTS, CITY_HISTORY_FILLERS, *CITY_TODAY_FACTS.values(), CITY_TODAY_FILLERS,
    *RIVER_FACTS.values(), RIVER_FILLERS, RIVER_NATURE, *MOUNTAIN_FACTS.values(), MOUNTAIN_FILLERS,
    MOUNTAIN_ROUTES, *COMPANY_ORIGIN_FACTS.values(), COMPANY_ORIGIN_FILLERS,
    *COMPANY_TODAY_FACTS.values(), COMPANY_TODAY_FILLERS,
)


def with_article(noun: str) -> str:
    """`engineer` -> `an engineer`, `painter` -> `a painter`."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# Slots drawn afresh for every filler sentence, so one passage does not repeat one value.
VARIED_SLOTS = {"interest": INTERESTS, "subject": SUBJECTS, "landscape": LANDSCAPES, "trade": TRADES}


def _words(text: str) -> int:
    return len(text.split())


def compose(rng: random.Random, facts: list[str], fillers: tuple[str, ...], ctx: dict[str, str]) -> str:
    """One passage: the fact sentences, then fillers in random order until it has 60-110 words.

    Fact sentences come first so the answer survives any truncation of the passage.
    """
    sentences = [f.format(**ctx) for f in facts]
    target = rng.randint(MIN_WORDS + 5, MAX_WORDS - 10)
    pool = list(fillers)
    rng.shuffle(pool)
    for template in pool:
        if sum(_words(s) for s in sentences) >= target:
            break
        varied = {slot: rng.choice(values) for slot, values in VARIED_SLOTS.items()}
        sentence = template.format(**{**ctx, **varied})
        if sum(_words(s) for s in sentences) + _words(sentence) > MAX_WORDS:
            continue
        sentences.append(sentence)
    text = " ".join(s[:1].upper() + s[1:] for s in sentences)
    n = _words(text)
    if not MIN_WORDS <= n <= MAX_WORDS:
        raise RuntimeError(f"passage of {n} words, outside {MIN_WORDS}-{MAX_WORDS}: {text!r}")
    return text
