"""A deliberately slow filter living outside the winnow package (used by the kill-and-resume test)."""
import time

from filters.base import Filter


class SlowLengthFilter(Filter):
    name = "slow_length"
    columns = {"slow_chars": "int"}
    defaults = {"min_chars": 400, "sleep": 0.0}
    decision_params = ("min_chars",)

    def score_batch(self, docs):
        time.sleep(self.params["sleep"])
        return [{"slow_chars": len(d.text)} for d in docs]

    def decide(self, s):
        return s["slow_chars"] >= self.params["min_chars"], "too_short"
