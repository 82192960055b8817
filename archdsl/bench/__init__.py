"""Measuring archdsl: inputs, backend runners and timing for ``archc run`` and ``archc bench``.

``timing`` holds the clocks and statistics, ``runners`` one forward pass per backend
(PyTorch, onnxruntime; CPU or CUDA), ``twins`` the torchvision models a zoo model can be
compared with, ``suite`` the whole benchmark, ``frontend`` the front end's speed, and
``construct`` the time to build a PyTorch module with weights.
Nothing here is imported by the core.
"""
