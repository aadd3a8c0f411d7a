r"""The demo's UMR loop on the embedded corpus (what `umr-jax demo` runs).

`umr-jax demo` uses the tiny scorer and retriever shipped in umr_jax/demo/pretrained/ (or
makes them with --make-models); to run the loop by hand, point it at them (or at any HF folders):

  umr-jax loop --config configs/demo.py --iterations 2 \
      loop.scorer=umr_jax/demo/pretrained/scorer loop.retriever=umr_jax/demo/pretrained/retriever \
      output_dir=runs/demo
"""

from umr_jax.demo.cli import demo_config


def get_config():
    return demo_config()
