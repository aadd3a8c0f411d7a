"""Scaling studies: nested log-spaced subsets per data source, saturating power-law fits with
bootstrap intervals, where returns flatten, figures and tables.

  fit.py         score(n) = a - b n^(-c) per source, bootstrap CIs
  flattening.py  the flattening size n* and its CI; every source of a study fitted
  resample.py    the question-level paired bootstrap (every point's R@kt on the same question resamples)
  compare.py     diminishing returns yes/no/inconclusive per arm; arms compared at matched sizes,
                 asymptotes and the equivalent-data ratio, with intervals
  plots.py       PNG/SVG figures (curves, gain per 10x, per-language panels) and the fit table
  report.py      report/scaling.{md,json,csv,png,svg}: the conclusion and everything behind it
  study.py       the plan, one folder per (source, size) point with an atomic result.json,
                 resuming, and the report; training plugs in as
                 `train_and_evaluate(source, size, point_dir)`
"""
