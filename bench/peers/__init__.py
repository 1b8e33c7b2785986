"""Peers the benchmarks measure Pacekeeper against, run from their own upstream artifacts."""
