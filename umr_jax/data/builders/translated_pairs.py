"""Translated (or any generic) training pairs as a tfds dataset, e.g. mMARCO exported as pairs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import tensorflow_datasets as tfds

from umr_jax.errors import InputError
from umr_jax.data.formats import read_pairs

_PAIR_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
_SPLIT_OF_NAME = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


@dataclasses.dataclass
class TranslatedPairsConfig(tfds.core.BuilderConfig):
    """`languages`: keep only pairs in these codes (None keeps all)."""

    languages: tuple[str, ...] | None = None


def split_of(path: Path, manual_dir: Path) -> str | None:
    """The split a pairs file belongs to: its folder (`train/`, `dev/`, `validation/`, `test/`)
    or the start of its name (`train-pt.jsonl`, `dev.parquet`); None when neither says."""
    for part in path.relative_to(manual_dir).parts[:-1]:
        if part in _SPLIT_OF_NAME:
            return _SPLIT_OF_NAME[part]
    head = re.split(r"[-_.]", path.name)[0]
    return _SPLIT_OF_NAME.get(head)


class TranslatedPairs(tfds.core.GeneratorBasedBuilder):
    """Pairs {query, positive, lang, negatives, passage_lang} from JSON-lines or parquet pairs
    files (`passage_lang` "" where a pair does not state its passage's language)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Pairs files in the umr-jax pairs format.",
                     "1.1.0": "passage_lang: the positive passage's language, when the pair states it."}
    BUILDER_CONFIGS = [TranslatedPairsConfig(name="all", description="All pairs in the manual directory.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put pairs files ({query, positive, lang, negatives?, passage_lang?} as JSON lines, .jsonl.gz or parquet) in
    the manual directory, in folders train/, dev/ (or validation/), test/, or named train*,
    dev*, test*. For mMARCO (machine-translated MS MARCO), get the per-language data from the
    Hugging Face dataset unicamp-dl/mmarco (https://huggingface.co/datasets/unicamp-dl/mmarco)
    and write each (query, positive, negative) triple as one pairs line
    {"query": ..., "positive": ..., "negatives": [...], "lang": "pt", "passage_lang": "en"}
    ("en" with the English passage, "pt" with the translated one).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Query-passage training pairs in many languages (translated datasets such as mMARCO, or WebFAQ pairs).",
            features=tfds.features.FeaturesDict(
                {
                    "query": tfds.features.Text(),
                    "positive": tfds.features.Text(),
                    "lang": tfds.features.Text(),
                    "negatives": tfds.features.Sequence(tfds.features.Text()),
                    "passage_lang": tfds.features.Text(),
                }
            ),
            homepage="https://huggingface.co/datasets/unicamp-dl/mmarco",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        by_split: dict[str, list[Path]] = {}
        unplaced = []
        for path in sorted(manual_dir.rglob("*")):
            if not path.is_file() or not path.name.endswith(_PAIR_SUFFIXES):
                continue
            split = split_of(path, manual_dir)
            if split is None:
                unplaced.append(path.name)
            else:
                by_split.setdefault(split, []).append(path)
        if unplaced:
            raise InputError(f"cannot tell the split of {', '.join(unplaced[:3])}: put pairs files in train/, dev/ or test/, or name them train*, dev*, test*", manual_dir)
        if not by_split:
            raise InputError("no pairs files (.jsonl, .jsonl.gz, .parquet) here", manual_dir)
        return {split: self._generate_examples(paths) for split, paths in by_split.items()}

    def _generate_examples(self, paths: list[Path]):
        languages = self.builder_config.languages
        for path in paths:
            for i, pair in enumerate(read_pairs(path)):
                if languages is not None and pair.lang not in languages:
                    continue
                yield f"{path.name}:{i}", {"query": pair.query, "positive": pair.positive, "lang": pair.lang,
                                           "negatives": list(pair.negatives), "passage_lang": pair.passage_lang or ""}
