"""Training under a plan: the callback, channel selection and samplers, the lean backward."""
