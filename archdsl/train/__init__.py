"""Training on the generated PyTorch modules: the loop, checkpoints, distillation and compression reports.

* :mod:`.loop`: :class:`~.loop.TrainConfig`, :func:`~.loop.fit` (one epoch after another on
  :class:`archdsl.data.Data`, validation after each) and :func:`~.loop.evaluate` (top-1, top-5, loss);
* :mod:`.checkpoint`: the checkpoint format of ``archc train`` and loading weights with layers reset;
* :mod:`.dist`: DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on CUDA);
* :mod:`.distill`: hints and soft targets from a teacher (``archc distill``);
* :mod:`.report`: the grid, measurements, table and plots of ``archc compress-report``.

The data sources are :mod:`archdsl.data`. Nothing here is imported by ``import archdsl``.
"""
