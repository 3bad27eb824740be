"""Agreement measures shared by training (validation AUC) and ``winnow quality-eval``: one ROC AUC."""
from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray | float:
    """ROC AUC as the Mann-Whitney U statistic, ties counted half (average ranks); NaN without both classes.

    1-D ``labels``/``scores`` give a float; 2-D (resamples x docs, same shape) give one AUC per row.
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    r = rankdata(scores, axis=-1)
    n_pos = labels.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    u = (r * labels).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    return float(auc) if auc.ndim == 0 else auc
