"""voxws-bench: load generator, metrics and reports for voxws servers (see bench/README.md)."""
