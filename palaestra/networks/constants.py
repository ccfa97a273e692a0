"""Numbers the torch networks, their numpy mirrors and the ONNX export must agree on (kept free
of torch, so that environment workers can act without importing it)."""

MASKED_LOGIT = -1.0e8  # the logit of a masked discrete action
CLIP = 5.0  # ML-Agents clips normalized observations to [-5, 5]
# From this width the CPU's matrix products are large enough for numpy's BLAS to use every core
# (palaestra/run.py); below it, one thread is faster
WIDE_NETWORK_UNITS = 256
