"""winnow's experiments: the matched-model ablation and its report, quality-model training and
evaluation, ground-truth measurements, benchmarks, and the `winnow` command line (``experiments.cli``,
the top floor). Modules are imported where used: ``import experiments`` stays cheap (no torch)."""
