"""The planner: options, importance, the memory model, the integer program, sweeps."""
