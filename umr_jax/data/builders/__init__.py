"""tensorflow-datasets builders for the original data files, built without TensorFlow.

Importing this package registers the builders with tfds: `xor_tydi` (configs `retrieve`,
`full`), `webfaq` (one config per language, ISO 639-3) and `translated_pairs`. They read the
files users download by hand (`manual_dir`; each builder's MANUAL_DOWNLOAD_INSTRUCTIONS says
where from), validate them with `umr_jax.data.formats`, and write `array_record` files that
`tfds.data_source` reads with random access (grain-friendly):

    import tensorflow_datasets as tfds
    from umr_jax.data import builders

    builder = builders.XorTydi(config="retrieve", data_dir="~/tensorflow_datasets", file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="~/xor_tydi_files"))
    source = tfds.data_source("xor_tydi/retrieve", data_dir="~/tensorflow_datasets")
    source["validation"][0]  # {'id': b'...', 'question': b'...', 'lang': b'ja', 'answers': [...], ...}
"""

from umr_jax.data.builders.translated_pairs import TranslatedPairs, TranslatedPairsConfig
from umr_jax.data.builders.webfaq import Webfaq, WebfaqConfig
from umr_jax.data.builders.xor_tydi import XorTydi, XorTydiConfig

__all__ = ["TranslatedPairs", "TranslatedPairsConfig", "Webfaq", "WebfaqConfig", "XorTydi", "XorTydiConfig"]
