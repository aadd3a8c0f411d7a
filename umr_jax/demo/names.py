"""Coined names for the demo world, and their transliteration into six native scripts.

Every name is made of consonant-vowel syllables (`ka`, `vo`, `ren`), so it can be written
exactly in Latin script and transliterated syllable by syllable into Arabic, Bengali,
Cyrillic, Hangul, Katakana and Telugu. Names are fictional by construction; `NameMint`
guarantees that no coined word equals, contains or is contained in another one, so an answer
string never matches inside an unrelated name (the XOR metric is a raw substring test).
"""

from __future__ import annotations

import dataclasses
import random

CONSONANTS = ("b", "d", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v")
VOWELS = ("a", "e", "i", "o", "u")
CODA = "n"

Syllable = tuple[str, str, str]  # (consonant, vowel, coda or "")


@dataclasses.dataclass(frozen=True)
class Word:
    """One coined word, e.g. `Tavoren` = (t,a,"") (v,o,"") (r,e,n)."""

    syllables: tuple[Syllable, ...]

    @property
    def latin(self) -> str:
        text = "".join(c + v + coda for c, v, coda in self.syllables)
        return text[:1].upper() + text[1:]

    def vowel_variant(self, position: int, vowel: str) -> "Word":
        """The same word with the vowel of syllable `position` replaced (a near-duplicate name)."""
        sylls = list(self.syllables)
        c, _, coda = sylls[position]
        sylls[position] = (c, vowel, coda)
        return Word(tuple(sylls))


@dataclasses.dataclass(frozen=True)
class Name:
    """A name of one or more coined words (`Mirela Tavoren`, `Kasimo`)."""

    words: tuple[Word, ...]

    @property
    def latin(self) -> str:
        return " ".join(w.latin for w in self.words)

    @property
    def last(self) -> str:
        return self.words[-1].latin

    @property
    def first(self) -> str:
        return self.words[0].latin

    def native(self, script: str) -> str:
        """The name written in `script` (a key of `SCRIPTS`)."""
        return SCRIPTS[script](self)


class NameMint:
    """Deterministic source of unique coined words.

    No two minted words are equal or substrings of one another (case-insensitive), and no
    minted word contains or is contained in a word of `reserved` (e.g. the English filler
    vocabulary), so each name is a distinctive string in the corpus.
    """

    def __init__(self, rng: random.Random, reserved: tuple[str, ...] = ()):
        self._rng = rng
        self._minted: set[str] = set()
        self._minted_substrings: set[str] = set()
        reserved_words = sorted(r.lower() for r in reserved if len(r) >= 4)
        self._reserved = set(reserved_words)
        self._reserved_substrings = {w[i:j] for w in reserved_words for i in range(len(w)) for j in range(i + 5, len(w) + 1)}

    @staticmethod
    def _substrings(text: str, min_length: int) -> set[str]:
        return {text[i:j] for i in range(len(text)) for j in range(i + min_length, len(text) + 1)}

    def _clashes(self, text: str) -> bool:
        low = text.lower()
        if low in self._minted_substrings or low in self._reserved_substrings:
            return True  # equal to, or inside, a minted or reserved word
        if self._substrings(low, 5) & self._minted:
            return True  # contains a minted word (all minted words have at least 5 letters)
        return bool(self._substrings(low, 4) & self._reserved)

    def contains_minted(self, text: str) -> bool:
        """True if `text` (any case) contains a minted word, e.g. `Tavorenin` for `Tavoren`."""
        return bool(self._substrings(text.lower(), 5) & self._minted)

    def register(self, word: Word) -> bool:
        """Adds an externally built word (a near-duplicate variant); False if it clashes."""
        low = word.latin.lower()
        if len(low) < 5 or self._clashes(low):
            return False
        self._minted.add(low)
        self._minted_substrings |= self._substrings(low, 5)
        return True

    def word(self, min_syllables: int = 2, max_syllables: int = 3, coda_rate: float = 0.2) -> Word:
        """A new unique word of `min_syllables`..`max_syllables` syllables."""
        for _ in range(10_000):
            n = self._rng.randint(min_syllables, max_syllables)
            sylls = []
            for i in range(n):
                coda = CODA if self._rng.random() < coda_rate and (i == n - 1 or self._rng.random() < 0.3) else ""
                sylls.append((self._rng.choice(CONSONANTS), self._rng.choice(VOWELS), coda))
            word = Word(tuple(sylls))
            # Doubled letters across syllables read badly ("Tanna"); skip them.
            latin = word.latin.lower()
            if any(a == b for a, b in zip(latin, latin[1:])):
                continue
            if self.register(word):
                return word
        raise RuntimeError("name space exhausted: raise max_syllables")

    def near_duplicate(self, word: Word) -> Word | None:
        """A registered one-vowel variant of `word` (`Kasimo` -> `Kasima`), or None if all clash."""
        positions = list(range(len(word.syllables)))
        self._rng.shuffle(positions)
        for pos in positions:
            vowels = [v for v in VOWELS if v != word.syllables[pos][1]]
            self._rng.shuffle(vowels)
            for vowel in vowels:
                variant = word.vowel_variant(pos, vowel)
                latin = variant.latin.lower()
                if any(a == b for a, b in zip(latin, latin[1:])):
                    continue
                if self.register(variant):
                    return variant
        return None


# ---------------------------------------------------------------------------------------------
# Transliteration tables: consonant and vowel per script, applied syllable by syllable.

_KATAKANA = {
    "k": "カキクケコ", "g": "ガギグゲゴ", "s": "サシスセソ", "n": "ナニヌネノ", "m": "マミムメモ",
    "b": "バビブベボ", "p": "パピプペポ", "r": "ラリルレロ", "l": "ラリルレロ",
}
_KATAKANA_SPECIAL = {
    "t": ("タ", "ティ", "トゥ", "テ", "ト"),
    "d": ("ダ", "ディ", "ドゥ", "デ", "ド"),
    "v": ("ヴァ", "ヴィ", "ヴ", "ヴェ", "ヴォ"),
}


def _katakana(name: Name) -> str:
    words = []
    for word in name.words:
        out = []
        for c, v, coda in word.syllables:
            i = VOWELS.index(v)
            out.append(_KATAKANA_SPECIAL[c][i] if c in _KATAKANA_SPECIAL else _KATAKANA[c][i])
            if coda:
                out.append("ン")
        words.append("".join(out))
    return "・".join(words)


_CYRILLIC_C = dict(zip(CONSONANTS, ("б", "д", "г", "к", "л", "м", "н", "п", "р", "с", "т", "в")))
_CYRILLIC_V = dict(zip(VOWELS, ("а", "е", "и", "о", "у")))


def _cyrillic(name: Name) -> str:
    words = []
    for word in name.words:
        text = "".join(_CYRILLIC_C[c] + _CYRILLIC_V[v] + ("н" if coda else "") for c, v, coda in word.syllables)
        words.append(text[:1].upper() + text[1:])
    return " ".join(words)


# Hangul: initial-consonant and vowel indices of the Unicode syllable block; final ㄴ = 4.
_HANGUL_INITIAL = dict(zip(CONSONANTS, (7, 3, 0, 15, 5, 6, 2, 17, 5, 9, 16, 7)))
_HANGUL_VOWEL = dict(zip(VOWELS, (0, 5, 20, 8, 13)))


def _hangul(name: Name) -> str:
    words = []
    for word in name.words:
        out = []
        for c, v, coda in word.syllables:
            code = 0xAC00 + (_HANGUL_INITIAL[c] * 21 + _HANGUL_VOWEL[v]) * 28 + (4 if coda else 0)
            out.append(chr(code))
        words.append("".join(out))
    return " ".join(words)


_ARABIC_C = dict(zip(CONSONANTS, ("ب", "د", "غ", "ك", "ل", "م", "ن", "ب", "ر", "س", "ت", "ف")))
_ARABIC_V = dict(zip(VOWELS, ("ا", "ي", "ي", "و", "و")))


def _arabic(name: Name) -> str:
    return " ".join(
        "".join(_ARABIC_C[c] + _ARABIC_V[v] + ("ن" if coda else "") for c, v, coda in word.syllables)
        for word in name.words
    )


_BENGALI_C = dict(zip(CONSONANTS, ("ব", "ড", "গ", "ক", "ল", "ম", "ন", "প", "র", "স", "ট", "ভ")))
_BENGALI_V = dict(zip(VOWELS, ("া", "ে", "ি", "ো", "ু")))


def _bengali(name: Name) -> str:
    return " ".join(
        "".join(_BENGALI_C[c] + _BENGALI_V[v] + ("ন্" if coda else "") for c, v, coda in word.syllables)
        for word in name.words
    )


_TELUGU_C = dict(zip(CONSONANTS, ("బ", "డ", "గ", "క", "ల", "మ", "న", "ప", "ర", "స", "ట", "వ")))
_TELUGU_V = dict(zip(VOWELS, ("ా", "ే", "ి", "ో", "ు")))


def _telugu(name: Name) -> str:
    return " ".join(
        "".join(_TELUGU_C[c] + _TELUGU_V[v] + ("న్" if coda else "") for c, v, coda in word.syllables)
        for word in name.words
    )


SCRIPTS = {
    "arabic": _arabic,
    "bengali": _bengali,
    "cyrillic": _cyrillic,
    "hangul": _hangul,
    "katakana": _katakana,
    "telugu": _telugu,
}

# The script a language writes foreign names in; Finnish keeps Latin script.
NATIVE_SCRIPT = {"ar": "arabic", "bn": "bengali", "ja": "katakana", "ko": "hangul", "ru": "cyrillic", "te": "telugu"}


def finnish_genitive(latin: str) -> str:
    """Genitive of a foreign name in Finnish: `Kasimo` -> `Kasimon`, `Tavoren` -> `Tavorenin`."""
    return latin + ("n" if latin[-1] in "aeiouy" else "in")
