"""``Plan``: the planner's answer, its file format, matching and comparison."""
