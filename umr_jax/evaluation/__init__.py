"""Evaluation: XOR-Retrieve R@kt, XOR-Full F1/EM/BLEU, IR metrics, and report comparison.

A light module: it imports neither jax nor torch, and its optional heavy helpers (nltk,
fugashi, ir_measures) are imported inside the functions that need them, so a missing one is
reported as a `MissingDependencyError` that says what to install.

  xor.py      XOR-Retrieve R@2kt/R@5kt and XOR-Full F1/EM/BLEU, with the official scripts' semantics
  ir.py       nDCG@10, Recall@100, MRR@10 per language through ir_measures
  readers.py  gold, prediction, qrels, run and query files as the metrics want them, read
              through umr_jax.data.formats
  report.py   Markdown tables, JSON reports on disk, side-by-side comparison of reports
  cli.py      `umr-jax evaluate {xor-retrieve, xor-full, ir, compare}`
"""
