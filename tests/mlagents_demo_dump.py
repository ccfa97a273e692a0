"""Run by ML-Agents' own interpreter (tests/test_demos_mlagents.py): load each `.demo` given on
the command line with ML-Agents' loader and save what it read, record by record, as .npz, so
that the test can compare it with Palaestra's reader. Prints one line per file: ok or the error."""

import sys

import numpy as np
from mlagents.trainers.demo_loader import demo_to_buffer, load_demonstration
from mlagents.trainers.buffer import BufferKey
from mlagents.trainers.trajectory import ObsUtil


def dump(path: str, out: str) -> None:
    spec, pairs, expected = load_demonstration(path)
    arrays = {
        "expected": np.array(expected),
        "continuous_size": np.array(spec.action_spec.continuous_size),
        "branches": np.array(spec.action_spec.discrete_branches, np.int64),
        "shapes": np.array([list(o.shape) + [0] * (3 - len(o.shape)) for o in spec.observation_specs], np.int64),
        "ranks": np.array([len(o.shape) for o in spec.observation_specs], np.int64),
        "reward": np.array([p.agent_info.reward for p in pairs], np.float32),
        "done": np.array([p.agent_info.done for p in pairs]),
        "max_step": np.array([p.agent_info.max_step_reached for p in pairs]),
        "id": np.array([p.agent_info.id for p in pairs], np.int64),
        "mask_len": np.array([len(p.agent_info.action_mask) for p in pairs], np.int64),
        "masks": np.array([m for p in pairs for m in p.agent_info.action_mask], bool),
        "continuous": np.array([v for p in pairs for v in p.action_info.continuous_actions], np.float32),
        "discrete": np.array([v for p in pairs for v in p.action_info.discrete_actions], np.int64),
        "vector": np.array([v for p in pairs for v in p.action_info.vector_actions_deprecated], np.float32),
        "vector_len": np.array([len(p.action_info.vector_actions_deprecated) for p in pairs], np.int64),
    }
    for i in range(len(spec.observation_specs)):
        arrays[f"floats_{i}"] = np.array([v for p in pairs for v in p.agent_info.observations[i].float_data.data],
                                         np.float32)
    try:  # the training buffer: observation i with action i, reward and done of record i + 1
        _, buffer = demo_to_buffer(path, 1)
        arrays["buffer_done"] = np.array(buffer[BufferKey.DONE], bool)
        arrays["buffer_reward"] = np.array(buffer[BufferKey.ENVIRONMENT_REWARDS], np.float32)
        for i in range(len(spec.observation_specs)):
            arrays[f"buffer_obs_{i}"] = np.array(buffer[ObsUtil.get_name_at(i)], np.float32)
    except Exception as e:  # noqa: BLE001 - reported, the record-level arrays are still compared
        arrays["buffer_error"] = np.array(f"{type(e).__name__}: {e}")
    np.savez(out, **arrays)


if __name__ == "__main__":
    for path, out in zip(sys.argv[1::2], sys.argv[2::2]):
        try:
            dump(path, out)
            print("ok", path)
        except Exception as e:  # noqa: BLE001 - the test decides which files must load
            print("error", path, f"{type(e).__name__}: {e}".replace("\n", " "))
