"""The subset of MongoDB's query language the in-memory and PostgreSQL stores need, over BSON-decoded dicts.

Values go through a BSON round trip on the way in and out (:func:`bson_copy`), so the store holds what
MongoDB would: lists instead of tuples, aware UTC datetimes truncated to milliseconds, no aliasing with
the caller's objects. Matching and sorting follow MongoDB's rules where a job store can notice them:
type brackets (a date never compares with a number, ``true`` never equals ``1``), ``null`` matching a
missing field, dot paths through embedded documents and arrays, arrays matching by any element, ordered
document equality, and BSON's cross-type sort order.
"""

from .match import check_filter, matches
from .update import Changes, apply_update, pipeline_matches, set_path, upsert_base, upsert_document
from .values import FilterError, bson_copy, bson_value, compare, sort_documents, values_equal

__all__ = [
    "Changes",
    "FilterError",
    "apply_update",
    "bson_copy",
    "bson_value",
    "check_filter",
    "compare",
    "matches",
    "pipeline_matches",
    "set_path",
    "sort_documents",
    "upsert_base",
    "upsert_document",
    "values_equal",
]
