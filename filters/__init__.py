"""winnow's filters: the filter contract, the filter stage, and applying filters to documents.

The public API (what a plug-in or a notebook needs)::

    from filters import Filter, register_filter, function_filter, apply_filters, FilterStage
"""
from filters.apply import Applied, Scores, Verdicts, apply_filters, decide_filters, score_filters
from filters.base import (
    Filter,
    FilterError,
    ThresholdOrTopFraction,
    TrainContext,
    available_filters,
    filter_class,
    function_filter,
    register_filter,
)
from filters.stage import FilterStage

__all__ = ["Applied", "Filter", "FilterError", "FilterStage", "Scores", "ThresholdOrTopFraction", "TrainContext",
           "Verdicts", "apply_filters", "available_filters", "decide_filters", "filter_class", "function_filter",
           "register_filter", "score_filters"]
