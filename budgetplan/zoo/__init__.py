"""Example models, offline pretrained weights and data sets; not the library itself."""
