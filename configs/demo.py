r"""The demo's UMR loop on the embedded corpus (what `umr-jax demo` runs).

`umr-jax demo` makes the tiny scorer and retriever itself; to run the loop by hand, point it at
them (or at any HF folders):

  umr-jax loop --config configs/demo.py --iterations 2 \
      loop.scorer=runs/demo/models/scorer loop.retriever=runs/demo/models/retriever output_dir=runs/demo
"""

from umr_jax.demo import demo_config


def get_config():
    return demo_config()
