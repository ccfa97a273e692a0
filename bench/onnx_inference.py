"""Time what an exported model costs where it ships: onnxruntime on one thread running a PPO
policy with one camera (nature_cnn, 2 x 256 units, 5 discrete actions by default), a call per
decision of several agents, as Unity's inference engine makes them.

Usage: python bench/onnx_inference.py [--image 84] [--agents 16] [--encoder nature_cnn]
(run it from another checkout with PYTHONPATH to compare versions of the exporter)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from palaestra.algorithms.ppo import PPO
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.export import export_policy
from palaestra.settings import load_trainer_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=int, default=84, help="height and width of the camera (3 channels)")
    parser.add_argument("--agents", type=int, default=16, help="agents per call")
    parser.add_argument("--encoder", default="nature_cnn", choices=("simple", "nature_cnn", "resnet"))
    parser.add_argument("--calls", type=int, default=50, help="calls per timing; the best of 5 timings is kept")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="palaestra-onnx-"))
    (folder / "c.yaml").write_text(f"B:\n  trainer: ppo\n  hidden_units: 256\n  num_layers: 2\n"
                                   f"  vis_encode_type: {args.encoder}\n")
    settings = load_trainer_config(folder / "c.yaml").for_behavior("B")
    spec = BehaviorSpec(((args.image, args.image, 3),), ActionSpec(discrete_branches=(5,)))
    torch.manual_seed(0)
    model = folder / "policy.onnx"
    export_policy(PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0)).policy, model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options)
    declared = session.get_inputs()[0].shape
    shape = [args.agents if not isinstance(d, int) else d for d in declared]
    feeds = {"obs_0": np.random.default_rng(1).random(shape, dtype=np.float32),
             "action_masks": np.ones((args.agents, 5), np.float32)}
    for _ in range(5):
        session.run(None, feeds)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(args.calls):
            session.run(None, feeds)
        timings.append((time.perf_counter() - start) / args.calls)
    convolutions = sum(node.op_type == "Conv" for node in onnx.load(str(model)).graph.node)
    print(f"input {declared}, {convolutions} Conv nodes, {args.agents} agents per call: "
          f"best {min(timings) * 1e3:.2f} ms, median {sorted(timings)[2] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
