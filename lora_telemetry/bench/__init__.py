"""Benchmarks: the cost of our hooks, the cost of a scrape at adapter scale, and traffic."""
