"""Helpers the tests share: synthetic devices and cost tables, the command line run in
and out of process, small Lightning modules and transformers. Fixtures stay in
``conftest.py``."""
