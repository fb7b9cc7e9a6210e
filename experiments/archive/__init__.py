"""Scripts of finished studies whose results live in experiments/README.md; run from the repository root,
e.g. python -m experiments.archive.soup or bash experiments/archive/compare_losses.sh."""
