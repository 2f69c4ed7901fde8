"""bnlab's batch-norm engine, in layers; each module imports only from the layers above it here.

1. :mod:`.math` -- the math, written once as plain functions in torch operations: batch statistics,
   normalize, the backward's reduction and elementwise halves, the running-statistics update, the
   eval affine map, and the combination of statistics of parts. It imports nothing of the
   kernels. :mod:`.checks` holds the argument checks, run once per call by the caller.
2. :mod:`.backends` -- the primitives (``forward``, ``stats``, ``normalize``, ``backward``,
   ``backward_reduce``, ``backward_elemt``, ``eval``, ``update_running_stats``) behind one
   interface, with two backends: ``reference`` (the math above) and ``numba_cpu`` (the compiled
   kernels of :mod:`bnlab.kernels`). A CUDA backend would be a third implementation of the same
   interface, registered with the dispatch; nothing above it changes.
3. :mod:`.dispatch` -- picks a backend for each primitive call; the rules are stated there, once.
4. :mod:`.autograd` and :mod:`.ops` -- the autograd Functions and the training / eval operations
   the layers call, built on the primitives; :func:`bnlab.functional.batch_norm` is
   ``torch.nn.functional.batch_norm``'s interface to them.
5. :mod:`bnlab.nn` -- the layers.

Nothing is imported here, so ``import bnlab.core.math`` does not load numba.
"""
