"""XOR-TyDi QA v1.1 questions as a tfds dataset: configs `retrieve` (XOR-Retrieve) and `full`
(XOR-Full), splits train / validation / test, from the released JSON-lines files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from umr_jax.errors import InputError
from umr_jax.data.builders.manual_files import find_first_named
from umr_jax.data.formats import read_questions

# Released file names per config and split; v1.1 first, then the v1.0 names.
XOR_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "retrieve": {
        "train": ("xor_train_retrieve_eng_span.jsonl",),
        "validation": ("xor_dev_retrieve_eng_span_v1_1.jsonl", "xor_dev_retrieve_eng_span.jsonl"),
        "test": ("xor_test_retrieve_eng_span_q_only_v1_1.jsonl", "xor_test_retrieve_eng_span_q_only.jsonl"),
    },
    "full": {
        "train": ("xor_train_full.jsonl",),
        "validation": ("xor_dev_full_v1_1.jsonl", "xor_dev_full.jsonl"),
        "test": ("xor_test_full_q_only_v1_1.jsonl", "xor_test_full_q_only.jsonl"),
    },
}

_BASE_URL = "https://nlp.cs.washington.edu/xorqa/XORQA_site/data/"


@dataclasses.dataclass
class XorTydiConfig(tfds.core.BuilderConfig):
    """`task`: "retrieve" or "full" (which released files the config reads)."""

    task: str = "retrieve"


class XorTydi(tfds.core.GeneratorBasedBuilder):
    """XOR-TyDi QA v1.1 questions: id, question, lang (ar bn fi ja ko ru te), answers.

    Every split present in the manual directory is built (test files have questions only:
    `answers` is empty and `has_answers` False). Records are validated as `xor-questions`
    with the variant's 7 languages; a bad line stops the build with `file:line: message`.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "XOR-TyDi QA v1.1 files."}
    BUILDER_CONFIGS = [
        XorTydiConfig(name="retrieve", task="retrieve", description="XOR-Retrieve: questions in 7 languages, English passages."),
        XorTydiConfig(name="full", task="full", description="XOR-Full: questions in 7 languages, answers in the question's language."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download the XOR-TyDi QA v1.1 files linked from the XORQA GitHub repository
    (https://github.com/AkariAsai/XORQA, section "Download the Dataset") into the manual
    directory (any sub-folder is fine):

      retrieve: {_BASE_URL}xor_train_retrieve_eng_span.jsonl
                {_BASE_URL}xor_dev_retrieve_eng_span_v1_1.jsonl
                {_BASE_URL}xor_test_retrieve_eng_span_q_only_v1_1.jsonl
      full:     {_BASE_URL}xor_train_full.jsonl
                {_BASE_URL}xor_dev_full_v1_1.jsonl
                {_BASE_URL}xor_test_full_q_only_v1_1.jsonl

    Splits whose file is absent are not built; at least one must be present. The English
    passage collection (psgs_w100.tsv) is not part of this dataset: read it with
    umr_jax.data.passage_store.PassageStore.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="XOR-TyDi QA: cross-lingual open-retrieval questions in 7 languages (Asai et al., NAACL 2021).",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "question": tfds.features.Text(),
                    "lang": tfds.features.Text(),
                    "answers": tfds.features.Sequence(tfds.features.Text()),
                    "has_answers": tfds.features.Scalar(dtype=np.bool_),
                }
            ),
            homepage="https://nlp.cs.washington.edu/xorqa/",
            citation="@inproceedings{asai-etal-2021-xor, title={{XOR} {QA}: Cross-lingual Open-Retrieval Question Answering}, author={Asai, Akari and Kasai, Jungo and Clark, Jonathan and Lee, Kenton and Choi, Eunsol and Hajishirzi, Hannaneh}, booktitle={NAACL}, year={2021}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        files = {split: find_first_named(manual_dir, names) for split, names in XOR_FILES[self.builder_config.task].items()}
        present = {split: path for split, path in files.items() if path is not None}
        if not present:
            expected = ", ".join(n for names in XOR_FILES[self.builder_config.task].values() for n in names)
            raise InputError(f"no XOR-TyDi {self.builder_config.task} files here; expected some of: {expected}", manual_dir)
        return {split: self._generate_examples(path) for split, path in present.items()}

    def _generate_examples(self, path: Path):
        for question in read_questions(path, variant=self.builder_config.task):
            yield question.id, {
                "id": question.id,
                "question": question.question,
                "lang": question.lang,
                "answers": list(question.answers or ()),
                "has_answers": question.answers is not None,
            }
