r"""The demo's UMR loop on the embedded corpus (what `umr-jax demo` runs), from any folder:

  umr-jax loop --config demo --iterations 2 --output runs/demo

It starts from the tiny scorer and retriever shipped in the package (umr_jax/demo/pretrained/,
found through the installed package, not the current folder) and reads the embedded corpus the
same way; point it at other HF folders or model IDs with loop.scorer=... loop.retriever=...
(`umr-jax demo --make-models` makes new tiny models).
"""

import importlib.resources

from umr_jax.demo.cli import demo_config


def get_config():
    c = demo_config()
    pretrained = importlib.resources.files("umr_jax.demo") / "pretrained"  # umr_jax.demo.models.PRETRAINED, without jax
    c.loop.scorer = str(pretrained / "scorer")
    c.loop.retriever = str(pretrained / "retriever")
    return c
