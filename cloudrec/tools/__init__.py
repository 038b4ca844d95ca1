"""Command-line tools: im2rec, index, inspect, cache, demo."""
