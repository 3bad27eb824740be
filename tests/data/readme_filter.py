"""The README's "write your own filter" example; tests/test_plugin_filter.py runs it."""
from filters.base import Filter


class Shouting(Filter):
    """Remove documents written mostly in capital letters."""

    name = "shouting"
    columns = {"upper_frac": "float"}          # score column -> type
    defaults = {"max_upper_frac": 0.5}         # every parameter, with its default
    decision_params = ("max_upper_frac",)      # thresholds: `winnow select` re-applies them, no re-scoring

    def score(self, doc):
        letters = [c for c in doc.text if c.isalpha()]
        return {"upper_frac": sum(c.isupper() for c in letters) / max(len(letters), 1)}

    def decide(self, scores):
        return scores["upper_frac"] <= self.params["max_upper_frac"], "too_loud"
