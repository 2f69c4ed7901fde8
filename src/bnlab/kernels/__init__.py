"""Fast paths for batch norm. :mod:`bnlab.kernels.dispatch` is the one place that decides whether a
call runs a fast kernel or :mod:`bnlab.functional`'s pure-torch reference."""
