"""A loaded ``SteadyDancerModel`` and where its tensors live: the memory planner (pure arithmetic), sizes, and every
device movement (placement, block swap, scoped residency)."""
