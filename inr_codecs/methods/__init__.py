"""One package per method. Each keeps its payload format and numpy decoder (``format``: what
an independent decoder needs, checkable against ``docs/format.md`` alone) apart from its
encoder (``encoder``: sizing, partitioning, fitting; torch only through the fitting engine),
and exports ``METHOD``, its entry for :mod:`inr_codecs.registry`."""
