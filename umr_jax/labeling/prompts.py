"""UMR's scorer prompts, exactly as the released code builds them.

Encoder input:  "{head} {title} {text}. {verbalizer} in {language name}."  with head
"Passage: " (so two spaces follow the colon) and verbalizer "Please write a question based on
this passage". Decoder target: "Question: " + question (no "?" appended), ending with EOS.
"""

from __future__ import annotations

PASSAGE_HEAD = "Passage: "
VERBALIZER = "Please write a question based on this passage"
QUESTION_HEAD = "Question: "

LANGUAGE_NAMES = {
    "ar": "Arabic",
    "bn": "Bengali",
    "fi": "Finnish",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
    "te": "Telugu",
    "en": "English",
    "es": "Spanish",
    "km": "Khmer",
    "ms": "Malay",
    "tr": "Turkish",
    "sv": "Swedish",
    "zh": "Chinese",
}


def language_name(code: str) -> str:
    """The language name the prompt uses; an unknown code is used verbatim."""
    return LANGUAGE_NAMES.get(code, code)


def scorer_input(title: str, text: str, lang: str) -> str:
    """The encoder string for one (passage, question language) pair."""
    return f"{PASSAGE_HEAD} {title} {text}. {VERBALIZER} in {language_name(lang)}."


def scorer_target(question: str) -> str:
    """The decoder string whose likelihood is the score (the tokenizer appends EOS)."""
    return f"{QUESTION_HEAD}{question}"
