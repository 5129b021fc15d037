"""The cost model: trace a model, price each layer in memory and MACs."""
