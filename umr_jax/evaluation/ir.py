"""nDCG@10, Recall@100 and MRR@10 per language, computed by ir_measures (pytrec_eval inside).

Conventions, those of trec_eval with `-c` as MIRACL and Mr.TyDi report them:
  - every query in the qrels counts; a query that the run does not answer scores 0;
  - queries in the run but not in the qrels are ignored (the report says how many);
  - a document is relevant for Recall and MRR when its relevance is >= 1; nDCG uses the grades.
The run is handed to ir_measures with strictly decreasing scores that encode its ranking
(`readers.read_run` ranks TREC runs as trec_eval does and retrieval JSON in list order), so
every ir_measures back-end sees the same order and ties cannot be broken differently.

A query's language comes from `--queries`, else from the retrieval JSON's `lang`; without
either, all queries form one group, "all". Per language: the mean over its queries;
"average": the mean over languages.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Mapping

from umr_jax.errors import MissingDependencyError

# report key -> ir_measures measure name
IR_METRICS = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "mrr@10": "RR@10"}
ALL_QUERIES = "all"
UNKNOWN_LANG = "unknown"


@dataclasses.dataclass
class IrReport:
    """metric -> {lang: mean over the language's queries, ..., "average": mean over languages};
    queries: lang -> qrels queries; missing_run: qrels queries the run does not answer (scored
    0); run_queries_without_qrels: run queries ignored for want of judgements."""

    scores: dict[str, dict[str, float]]
    queries: dict[str, int]
    missing_run: int
    run_queries_without_qrels: int

    def to_json(self) -> dict:
        report: dict = {metric: dict(table) for metric, table in self.scores.items()}
        report["queries"] = dict(self.queries)
        report["missing_run"] = self.missing_run
        report["run_queries_without_qrels"] = self.run_queries_without_qrels
        return report


def per_query_scores(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """query id -> {report metric: value} for every query in `qrels`, by ir_measures; queries
    absent from `rankings` (or given no documents) score 0."""
    try:
        import ir_measures
    except ImportError:
        raise MissingDependencyError("IR metrics are computed by ir-measures: pip install ir-measures") from None
    measures = {key: ir_measures.parse_measure(name) for key, name in IR_METRICS.items()}
    by_measure = {measure: key for key, measure in measures.items()}
    run = {
        query_id: {doc_id: float(len(docs) - rank) for rank, doc_id in enumerate(docs)}
        for query_id, docs in rankings.items()
        if query_id in qrels and docs
    }
    scores = {query_id: {key: 0.0 for key in IR_METRICS} for query_id in qrels}
    if run:
        qrels_dict = {query_id: dict(judgements) for query_id, judgements in qrels.items()}
        for metric in ir_measures.iter_calc(list(measures.values()), qrels_dict, run):
            scores[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    return scores


def ir_scores(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, list[str]],
    query_langs: Mapping[str, str] | None = None,
) -> IrReport:
    """The per-language report. `query_langs` maps query id -> language; when it is empty or
    None every query is in "all", otherwise a qrels query it does not cover is in "unknown".
    Languages appear in order of first appearance in the qrels."""
    per_query = per_query_scores(qrels, rankings)
    groups: dict[str, list[str]] = {}
    for query_id in qrels:
        lang = query_langs.get(query_id, UNKNOWN_LANG) if query_langs else ALL_QUERIES
        groups.setdefault(lang, []).append(query_id)
    scores: dict[str, dict[str, float]] = {}
    for metric in IR_METRICS:
        table = {lang: statistics.fmean(per_query[q][metric] for q in query_ids) for lang, query_ids in groups.items()}
        table["average"] = statistics.fmean(table.values())
        scores[metric] = table
    return IrReport(
        scores=scores,
        queries={lang: len(query_ids) for lang, query_ids in groups.items()},
        missing_run=sum(1 for query_id in qrels if not rankings.get(query_id)),
        run_queries_without_qrels=sum(1 for query_id in rankings if query_id not in qrels),
    )
