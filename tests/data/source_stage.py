"""A source stage as a plug-in would write one: it only yields rows; the runner writes the shards."""
from __future__ import annotations

import pyarrow as pa

from pipeline.document import DOC_SCHEMA
from pipeline.shards import fingerprint
from pipeline.stage import SourceRead, Stage


class NumbersRead(SourceRead):
    def __init__(self, stage: "Numbers", start: int):
        self.stage, self.start = stage, start

    def __iter__(self):
        for i in range(self.start, self.stage.params.get("count", 10)):
            row = {"id": f"n{i}", "text": f"number {i}", "source": "numbers", "metadata": "{}"}
            if i % 3 == 0:
                row.update(reason="multiple_of_three", detail=f"{i} = 3 x {i // 3}")
            yield row

    def finish(self, markers):
        if self.stage.params.get("fail_finish"):
            raise ValueError("numbers: the closing check failed")
        return {"notes": [f"asked for rows after {self.start}"], "counters": {"numbers_read": 1}}


class Numbers(Stage):
    """Rows n0..n{count-1}; multiples of three are removed."""

    kind = "numbers"
    reads_inputs = True
    has_scores = False

    def source_tasks(self):
        return [{"index": 0, "label": "numbers"}]

    def input_fingerprint(self, tasks):
        return fingerprint(self.params.get("count", 10))

    def read_source(self, task, start):
        return NumbersRead(self, start)

    def source_schema(self) -> pa.Schema:
        return DOC_SCHEMA

    def source_shard_rows(self) -> int:
        return self.params.get("shard_rows", 4)

    def decision_config(self):
        return {k: v for k, v in self.params.items() if k != "fail_finish"}

    def scoring_config(self):
        return self.decision_config()
