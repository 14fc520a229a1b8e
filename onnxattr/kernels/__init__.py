"""Custom CUDA kernels for device='cuda', where a composition of CuPy calls is slow.

Nothing here imports cupy until a kernel runs, and callers reach a kernel only with cupy arrays
in hand (``backend.use_kernels``). Each kernel has a NumPy equivalent in :mod:`.reference`, the
oracle that ``tests/test_gpu.py`` compares it with; ``tests/test_backend.py`` checks the
references against the ops and compiles every source with nvcc where it is installed.

- :mod:`.divide`: the LRP stabilized division r / (z + eps sign z), with the sum of two
  denominators and the sign mask of LRP-gamma fused in.
- :mod:`.window`: im2col and col2im of 2-D convolutions, padding and cropping fused in.
- :mod:`.pool`: 2-D max pooling with the argmax of each window, and its vjp.
- :mod:`.percentile`: per-row percentiles by radix select (no sort), and RectGrad's mask.
"""
