"""Scaling studies: nested log-spaced subsets per data source, saturating power-law fits with
bootstrap intervals, where returns flatten, figures and tables.

  fit.py         score(n) = a - b n^(-c) per source, bootstrap CIs
  flattening.py  the flattening size n* and its CI; every source of a study fitted
  plots.py       PNG/SVG figures and the Markdown table
  study.py       the plan, one folder per (source, size) point with an atomic result.json,
                 resuming, and the report; training plugs in as
                 `train_and_evaluate(source, size, point_dir)`
"""
