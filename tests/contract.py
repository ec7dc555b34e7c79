"""The output contract every run must keep, written out once for the local and the cluster tests.

Spelled out here rather than imported from the job: a change to the job's schema must fail these tests.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

FEATURES_SCHEMA = [
    ("path", "string"),
    ("label", "string"),
    ("features", "list<element: float>"),
    ("pca_features", "list<element: double>"),
    ("size", "int64"),  # the file's, for a later run's --reuse
    ("modification_time", "int64"),
]


def features_schema(out: Path) -> list[tuple[str, str]]:
    """(name, Arrow type) of the columns of OUTPUT/features, as a Parquet reader sees them."""
    schema = pq.read_schema(next((out / "features").glob("*.parquet")))
    return [(field.name, str(field.type)) for field in schema]
