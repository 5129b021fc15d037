"""A plan's training step as C: the traced graph (``graph``), the arena's layout
(``schedule``), the C text (``emit``), the library written (``library``) and built and run
on the host or an emulated Cortex-M (``board``); docs/device.md."""
