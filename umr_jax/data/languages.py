"""Language codes the data layer knows.

Records in every format carry a language code, and an unknown code is an input error (a typo
such as `jp` for `ja` would otherwise silently become a language of its own). The known codes
are the ISO 639-1 codes of the XOR-TyDi, MKQA and WebFAQ languages and of other widely used
languages, their ISO 639-3 counterparts (WebFAQ names its per-language files and configs with
ISO 639-3: `ara`, `deu`, ...), and MKQA's three Chinese variants (`zh_cn`, `zh_hk`, `zh_tw`).
Callers can pass their own set to any reader instead.
"""

from __future__ import annotations

# XOR-TyDi QA v1.1: the 7 question languages of XOR-Retrieve and XOR-Full.
XOR_LANGUAGES: tuple[str, ...] = ("ar", "bn", "fi", "ja", "ko", "ru", "te")

# MKQA: 26 languages and variants, as the released file spells them.
MKQA_LANGUAGES: tuple[str, ...] = (
    "ar", "da", "de", "en", "es", "fi", "fr", "he", "hu", "it", "ja", "km", "ko", "ms", "nl",
    "no", "pl", "pt", "ru", "sv", "th", "tr", "vi", "zh_cn", "zh_hk", "zh_tw",
)

# ISO 639-1 -> ISO 639-3 for the languages WebFAQ, MKQA, XOR-TyDi, Mr.TyDi and MIRACL cover,
# and other widely used ones.
ISO639_1_TO_3: dict[str, str] = {
    "af": "afr", "am": "amh", "ar": "ara", "as": "asm", "az": "aze", "be": "bel", "bg": "bul",
    "bn": "ben", "bs": "bos", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu",
    "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus", "fa": "fas",
    "fi": "fin", "fr": "fra", "ga": "gle", "gl": "glg", "gu": "guj", "ha": "hau", "he": "heb",
    "hi": "hin", "hr": "hrv", "hu": "hun", "hy": "hye", "id": "ind", "ig": "ibo", "is": "isl",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "km": "khm", "kn": "kan",
    "ko": "kor", "ku": "kur", "ky": "kir", "la": "lat", "lb": "ltz", "lo": "lao", "lt": "lit",
    "lv": "lav", "mg": "mlg", "mk": "mkd", "ml": "mal", "mn": "mon", "mr": "mar", "ms": "msa",
    "mt": "mlt", "my": "mya", "nb": "nob", "ne": "nep", "nl": "nld", "nn": "nno", "no": "nor",
    "or": "ori", "pa": "pan", "pl": "pol", "ps": "pus", "pt": "por", "ro": "ron", "ru": "rus",
    "sd": "snd", "si": "sin", "sk": "slk", "sl": "slv", "so": "som", "sq": "sqi", "sr": "srp",
    "su": "sun", "sv": "swe", "sw": "swa", "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha",
    "tk": "tuk", "tl": "tgl", "tr": "tur", "tt": "tat", "ug": "uig", "uk": "ukr", "ur": "urd",
    "uz": "uzb", "vi": "vie", "xh": "xho", "yi": "yid", "yo": "yor", "zh": "zho", "zu": "zul",
}
ISO639_3_TO_1: dict[str, str] = {three: one for one, three in ISO639_1_TO_3.items()}
# Codes with no ISO 639-1 form that multilingual web corpora use.
_ISO639_3_ONLY: tuple[str, ...] = ("ceb", "fil", "hbs", "war", "zsm")

KNOWN_LANGUAGES: frozenset[str] = frozenset(
    set(ISO639_1_TO_3) | set(ISO639_1_TO_3.values()) | set(_ISO639_3_ONLY) | set(MKQA_LANGUAGES) | set(XOR_LANGUAGES)
)


def to_iso639_1(code: str) -> str:
    """The ISO 639-1 form of `code` (`ara` -> `ar`); codes without one are returned unchanged."""
    return ISO639_3_TO_1.get(code, code)


def describe_codes(codes) -> str:
    """`codes` sorted and comma-separated, or, when there are many, their count and a few
    familiar ones (for error messages)."""
    codes = sorted(codes)
    if len(codes) <= 12:
        return ", ".join(codes)
    familiar = [c for c in ("ar", "bn", "en", "fi", "ja", "ko", "ru", "te", "ara", "eng") if c in codes]
    return f"the {len(codes)} known codes (such as {', '.join(familiar or codes[:6])}; readers accept others given known_languages)"
