"""Bias findings: rules that turn a run directory's records and maps into a short list a reviewer can act on.

Layout: `record` (the Finding record, kinds, schema check), `places` and `stats` (helpers the rules share),
`context` (what several rules read, computed once), one module per rule, each declaring its `KIND`
(`model_health`, `background_reliance`, `spatial_shortcut`, `strategy_cluster`, `context_confusion`,
`suspected_label_error`), the evidence folds (`place_evidence`, `causal_evidence`), `registry` (the list of
rules, numbering, one finding per problem) and `run` (judge a run directory from its files). The model-side
checks live above this package, in `auditor.causal` and `auditor.judge`; nothing here imports torch.

Attention is judged with the *object score* (`stats.object_score`): a map spread evenly puts the mask's area
share on the object, so energy_in_mask alone would make every small object look like background reliance.
"""

from auditor.findings.context import Context
from auditor.findings.model_health import state as model_health_state
from auditor.findings.places import (
    attention_share,
    describe_place,
    downsample,
    hot_region,
    normalised_box,
    peak_in_box,
    peaks,
    regions_overlap,
)
from auditor.findings.record import FINDING_KEYS, SCHEMA_VERSION, SEVERITIES, Finding, Kind, metrics, validate_findings
from auditor.findings.registry import KINDS, RULES, find_all, number, scope_of, without_repeats
from auditor.findings.run import write_findings
from auditor.findings.stats import bootstrap_mean, object_score
from auditor.findings.strategy_cluster import eigengap, off_object, spray_clusters
from auditor.findings.suspected_label_error import LABEL_ERROR_COLUMNS

__all__ = [
    "FINDING_KEYS", "KINDS", "LABEL_ERROR_COLUMNS", "RULES", "SCHEMA_VERSION", "SEVERITIES", "Context", "Finding",
    "Kind", "attention_share", "bootstrap_mean", "describe_place", "downsample", "eigengap", "find_all",
    "hot_region", "metrics", "model_health_state", "normalised_box", "number", "object_score", "off_object",
    "peak_in_box", "peaks", "regions_overlap", "scope_of", "spray_clusters", "validate_findings",
    "without_repeats", "write_findings",
]  # fmt: skip
