"""Details of schedules, Unity's image observations, training sequences, GridWorld and the image
encoders that the other fast tests leave open: each test pins one definition (ML-Agents' where it
has one) that a plausible one-token change would break."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from palaestra.algorithms.schedules import scheduled_learning_rate
from palaestra.envs.base import ActionTuple
from palaestra.envs.builtin.gridworld import GridWorld
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.observations import decode_png
from palaestra.networks.visual import ChannelsFirst, ResidualBlock, image_encoder
from palaestra.rollout.sequences import real_rows, sequence_order
from palaestra.settings import TrainerSettings


# -- learning-rate schedule ---------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 1, 500, 1000, 2000])
def test_constant_learning_rate_schedule_keeps_the_rate_up_to_max_steps_and_beyond(step):
    # `constant` never decays, not even past max_steps (SAC's default schedule in ML-Agents 0.16)
    settings = TrainerSettings(learning_rate=3.0e-4, learning_rate_schedule="constant", max_steps=1000)
    assert scheduled_learning_rate(settings, step) == 3.0e-4


def test_linear_learning_rate_schedule_decays_to_1e_10_at_max_steps_and_stays_there():
    # ML-Agents 0.16: linear decay from learning_rate to 1e-10 over max_steps (1e-5 is beta's endpoint)
    settings = TrainerSettings(learning_rate=3.0e-4, learning_rate_schedule="linear", max_steps=1000)
    assert scheduled_learning_rate(settings, 0) == pytest.approx(3.0e-4, rel=1e-12)
    assert scheduled_learning_rate(settings, 500) == pytest.approx((3.0e-4 + 1e-10) / 2, rel=1e-12)
    assert scheduled_learning_rate(settings, 1000) == pytest.approx(1e-10, rel=1e-6)
    assert scheduled_learning_rate(settings, 5000) == pytest.approx(1e-10, rel=1e-6)


# -- Unity's PNG observations -------------------------------------------------------------------

def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _compressed(images: list[np.ndarray], shape: list[int], mapping: list[int] | None = None) -> object:
    o = pb.ObservationProto(shape=shape, compression_type=pb.PNG, compressed_data=b"".join(map(_png, images)))
    if mapping:
        o.compressed_channel_mapping.extend(mapping)
    return o


def test_compressed_channel_mapping_averages_the_png_channels_mapped_to_each_observation_channel():
    # API 1.2's stacked grayscale frames: output channel k is the mean of the PNG channels mapped
    # to k (mlagents_envs' _process_images_mapping), -1 marks padding channels
    rng = np.random.default_rng(0)
    first, second = (rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(2))
    mapping = [0, 0, 1, 1, 1, -1]
    got = decode_png(_compressed([first, second], [6, 7, 2], mapping), (6, 7, 2), "here")
    channels = np.concatenate([first, second], axis=2).astype(np.float64)
    expected = np.stack([channels[:, :, [0, 1]].mean(axis=2), channels[:, :, [2, 3, 4]].mean(axis=2)], axis=2)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.rint(expected).astype(np.uint8))


def test_compressed_channel_mapping_of_bright_frames_is_their_mean_not_a_clipped_sum():
    # a gray frame sent as RGB (Unity's encoding) decodes to its gray value, not 3 x gray clipped to 255
    gray = np.full((5, 5, 3), 200, np.uint8)
    got = decode_png(_compressed([gray, gray // 2], [5, 5, 2], [0, 0, 0, 1, 1, 1]), (5, 5, 2), "here")
    assert got[:, :, 0].tolist() == np.full((5, 5), 200).tolist()
    assert got[:, :, 1].tolist() == np.full((5, 5), 100).tolist()


def test_grayscale_observation_decodes_an_rgb_png_to_the_mean_of_its_colours():
    # mlagents_envs' process_pixels: one expected channel and no mapping → mean over the colours
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, :] = [30, 90, 240]
    got = decode_png(_compressed([image], [4, 4, 1]), (4, 4, 1), "here")
    assert got.shape == (4, 4, 1)
    assert np.unique(got).tolist() == [120]


# -- training sequences ---------------------------------------------------------------------------

def test_real_rows_drops_the_padding_rows_of_sequences():
    # padding rows (valid 0) carry zeros that must stay out of normalizers and statistics
    batch = {"x": np.arange(6, dtype=np.float32), "valid": np.array([1, 1, 0, 1, 0, 0], np.float32)}
    real = real_rows(batch)
    assert real["x"].tolist() == [0.0, 1.0, 3.0]
    assert real["valid"].tolist() == [1.0, 1.0, 1.0]


def test_sequence_mini_batches_are_shuffled_by_whole_sequences():
    # ML-Agents shuffles the buffer by sequence each epoch: the order of sequences must not be fixed
    rows, length = 80, 4
    orders = [sequence_order(rows, length, np.random.default_rng(seed)) for seed in range(3)]
    for order in orders:
        starts = order[::length]
        assert sorted(starts.tolist()) == list(range(0, rows, length))
        assert (order.reshape(-1, length) == starts[:, None] + np.arange(length)).all()
    assert all(not np.array_equal(order, np.arange(rows)) for order in orders)
    assert not np.array_equal(orders[0], orders[1])


def test_plain_rows_are_shuffled_one_by_one():
    # sequence_length 1 (no recurrence): every row is its own sequence, still shuffled
    order = sequence_order(50, 1, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(50)) and not np.array_equal(order, np.arange(50))


# -- GridWorld -----------------------------------------------------------------------------------

def _grid_step(place, action: int):
    env = GridWorld(seed=0)
    env.reset()
    env.agent[:], env.goal[:], env.pit[:] = place
    env.set_actions("GridWorld", ActionTuple(discrete=np.full((env.n, 1), action, np.int32)))
    env.step()
    return env.get_steps("GridWorld")


def test_gridworld_stepping_into_the_pit_gives_minus_one_and_ends_the_episode():
    # docs/environments.md: -0.01/step, +1 goal, -1 pit (both end)
    _, terminal = _grid_step(([2, 2], [0, 0], [2, 3]), action=3)  # right, into the pit
    assert len(terminal) == 9
    np.testing.assert_allclose(terminal.reward, -1.01, rtol=1e-6)


def test_gridworld_reaching_the_goal_gives_plus_one_and_ends_the_episode():
    # the goal ends the episode too
    _, terminal = _grid_step(([2, 2], [1, 2], [4, 4]), action=0)  # up, onto the goal
    assert len(terminal) == 9
    np.testing.assert_allclose(terminal.reward, 0.99, rtol=1e-6)


def test_gridworld_an_ordinary_step_costs_a_hundredth_and_goes_on():
    # neither goal nor pit: the step penalty alone, and the episode continues
    decision, terminal = _grid_step(([2, 2], [0, 0], [4, 4]), action=1)
    assert len(terminal) == 0
    np.testing.assert_allclose(decision.reward, -0.01, rtol=1e-6)


@pytest.mark.parametrize("cell, blocked", [
    ([0, 2], [True, False, False, False]),   # top wall: up
    ([4, 2], [False, True, False, False]),   # bottom wall: down
    ([2, 0], [False, False, True, False]),   # left wall: left
    ([2, 4], [False, False, False, True]),   # right wall: right
    ([4, 4], [False, True, False, True]),    # bottom-right corner
    ([2, 2], [False, False, False, False]),  # the middle: every move allowed
])
def test_gridworld_masks_moves_into_every_wall(cell, blocked):
    # moves up, down, left, right into the outer wall are masked, and no others
    env = GridWorld(seed=0)
    env.reset()
    env.agent[:] = cell
    (mask,) = env._masks()
    assert mask.tolist() == [blocked] * env.n


# -- image encoders -------------------------------------------------------------------------------

def _types(module: nn.Module) -> list[type]:
    return [type(m) for m in module]


def test_simple_encoder_layers_are_two_convolutions_with_leaky_relu_then_a_leaky_relu_dense_layer():
    # ML-Agents' (torch) SimpleVisualEncoder: conv, LeakyReLU, conv, LeakyReLU, flatten, dense, LeakyReLU
    encoder = image_encoder("simple", (20, 20, 3), 8)
    assert _types(encoder) == [ChannelsFirst, nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.LeakyReLU,
                               nn.Flatten, nn.Linear, nn.LeakyReLU]


def test_nature_cnn_encoder_layers_are_three_convolutions_with_leaky_relu_then_a_leaky_relu_dense_layer():
    # ML-Agents' (torch) NatureVisualEncoder: three conv + LeakyReLU, flatten, dense, LeakyReLU
    encoder = image_encoder("nature_cnn", (36, 36, 3), 8)
    assert _types(encoder) == [ChannelsFirst, nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.LeakyReLU, nn.Conv2d,
                               nn.LeakyReLU, nn.Flatten, nn.Linear, nn.LeakyReLU]


def test_resnet_encoder_stacks_convolution_max_pool_and_two_residual_blocks_then_swish_before_flatten():
    # IMPALA / ML-Agents' ResNetVisualEncoder: per stack conv, 3x3 max pool stride 2, two residual
    # blocks; swish before flattening, then a swish dense layer
    encoder = image_encoder("resnet", (20, 20, 3), 8)
    stack = [nn.Conv2d, nn.MaxPool2d, ResidualBlock, ResidualBlock]
    assert _types(encoder) == [ChannelsFirst, *stack, *stack, *stack, nn.SiLU, nn.Flatten, nn.Linear, nn.SiLU]
    pools = [m for m in encoder if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 0)] * 3
    block = encoder[3]
    assert _types(block.body) == [nn.SiLU, nn.Conv2d, nn.SiLU, nn.Conv2d]


def test_resnet_residual_block_adds_its_input_to_its_branch():
    # the skip connection: with the branch's convolutions zeroed the block returns its input,
    # and otherwise input + branch
    torch.manual_seed(0)
    block = ResidualBlock(4)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.body(x))
        for m in block.body:
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        torch.testing.assert_close(block(x), x)
