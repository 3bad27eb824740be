"""An evaluation task defined outside winnow (the README's example; a test runs it through the ablation).

In-context copying: each sentence is given twice in a row; how many fewer bits per byte does the model need for
the second copy than for the first? A model that has learnt to copy from its context gains; a unigram model
does not."""
from __future__ import annotations

import numpy as np

from experiments.evaluate import LN2, continuation_logprobs
from experiments.tasks import EvalTask, Metric


class CopyGain(EvalTask):
    kind = "copy_gain"
    defaults = {"sentences": ["The quick brown fox jumps over the lazy dog.",
                              "A small boat drifted past the old stone bridge."]}

    def metrics(self):
        return [Metric(f"{self.name}/gain", self.name, higher_is_better=True, unit="sentence",
                       label="bits per byte saved on the second copy")]

    def data_fingerprint(self):
        return self.params["sentences"]

    def prepare(self, tok, context, final):
        from experiments.tokenizer import eos_id

        seqs, starts, nbytes = [], [], []
        for s in self.params["sentences"]:
            one = tok.encode(s).ids
            two = tok.encode(s + " " + s).ids
            seqs += [[eos_id(tok)] + one, [eos_id(tok)] + two]
            starts += [1, 1 + len(two) - len(one)]  # the second copy's tokens (approximately its last len(one))
            nbytes.append(len(s.encode()))
        return {"seqs": seqs, "starts": starts, "bytes": np.asarray(nbytes)}

    def score(self, model, prepared, device):
        lp = continuation_logprobs(model, prepared["seqs"], prepared["starts"], device)
        first, second = -lp[0::2] / LN2, -lp[1::2] / LN2
        return {"gain": ((first - second) / prepared["bytes"]).astype(np.float32)}

    def aggregate(self, items):
        return {f"{self.name}/gain": float(np.mean(items["gain"]))}
