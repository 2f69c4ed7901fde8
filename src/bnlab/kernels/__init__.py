"""bnlab's compiled CPU kernels (numba): the code the numba backend (:mod:`bnlab.core.backends.numba_cpu`)
calls, the grouped lab CNN's first convolution (:mod:`.numba_conv`, for :mod:`bnlab.train.grouped`), with
the thread policy (:mod:`.threads`) and the disk cache (:mod:`.cache`) they need. Nothing here imports the
rest of bnlab."""
