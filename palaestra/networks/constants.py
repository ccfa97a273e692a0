"""Numbers the torch networks, their numpy mirrors and the ONNX export must agree on (kept free
of torch, so that environment workers can act without importing it)."""

MASKED_LOGIT = -1.0e8  # the logit of a masked discrete action
CLIP = 5.0  # ML-Agents clips normalized observations to [-5, 5]
# From this width the CPU trains on every core (numpy's BLAS where the accelerator trains every
# behavior, torch otherwise); narrower networks train on one thread (palaestra/machine.py)
WIDE_NETWORK_UNITS = 256
# --torch-device auto takes a CUDA GPU for networks this wide (or images): measured on an H200
# against 16 CPU cores, 256 units trained 1.1-1.5x faster on the CPU, 512 units as fast (batch 128)
# to 2.1x faster on the GPU (docs/benchmarks.md, "Which device trains faster")
GPU_NETWORK_UNITS = 512
# hidden layers: z sigmoid(z) (ML-Agents), tanh(z) (Stable-Baselines3) or max(z, 0) (rl-zoo's choice for some)
ACTIVATIONS = ("swish", "tanh", "relu")
DEFAULT_ACTIVATION = ACTIVATIONS[0]
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC's state-dependent log-std (Haarnoja et al. 2018, appendix C)
# The image encoders (`vis_encode_type`, networks/visual.py's image_encoder) and the smallest image
# (height and width) each takes: its convolutions leave at least 1x1. The settings' choices are
# these keys; encoders.py's conv_features says what each one's convolutions leave of an image.
MIN_IMAGE_SIZE = {"simple": 20, "nature_cnn": 36, "resnet": 15}
