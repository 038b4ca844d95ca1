"""Reader layer: epoch orders, partitions across ranks/workers, samplers and the fetch planner."""
