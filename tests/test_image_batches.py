"""Image encoders see a bounded set of batch sizes (networks/image_batches.py): oneDNN keeps a
kernel, and megabytes, for every input shape it meets, and a visual run's value estimates meet a
new one every few updates."""

from __future__ import annotations

import pytest
import torch

from palaestra.networks.image_batches import CHUNK, EXACT, bounded_size, encode_in_bounded_batches
from palaestra.networks.visual import image_encoder, image_features


def test_bounded_sizes_cover_each_batch_with_at_most_a_quarter_more_rows():
    sizes = {n: bounded_size(n) for n in range(1, 5000)}
    assert all(n <= size for n, size in sizes.items())
    assert all(sizes[n] == n for n in range(1, EXACT + 1))
    assert all(size <= 1.25 * n for n, size in sizes.items() if n > EXACT)
    assert all(sizes[2 ** k] == 2 ** k for k in range(13))  # the usual mini-batch sizes run as they are
    assert sizes[EXACT + 1] == 20 and sizes[33] == 40 and sizes[1200] == 1280
    assert len(set(sizes.values())) <= EXACT + 4 * 9  # four sizes per doubling above EXACT


def _recording(encoder: torch.nn.Module) -> tuple[torch.nn.Module, set[int]]:
    seen: set[int] = set()

    def encode(images: torch.Tensor) -> torch.Tensor:
        seen.add(int(images.shape[0]))
        return encoder(images)

    return encode, seen


@pytest.mark.parametrize("grad", [False, True])
def test_every_batch_size_reaches_the_encoder_as_one_of_a_few(grad):
    torch.manual_seed(0)
    encoder = image_encoder("simple", (20, 20, 3), 8)
    encode, seen = _recording(encoder)
    images = torch.randint(0, 256, (300, 20, 20, 3), dtype=torch.uint8)
    with torch.set_grad_enabled(grad):
        for n in range(1, 301):
            assert encode_in_bounded_batches(encode, images[:n]).shape == (n, 8)
    # without the bounds the encoder would have met 300 sizes
    assert seen <= set(range(1, EXACT + 1)) | {bounded_size(n) for n in range(EXACT + 1, 301)}
    if not grad:  # value estimates: chunks of CHUNK rows, never more
        assert max(seen) == CHUNK and len(seen) == EXACT + 8
    else:  # a gradient's batch is not split (training's mini-batches are one size)
        assert max(seen) == bounded_size(300) and len(seen) == len({bounded_size(n) for n in range(1, 301)})


@pytest.mark.parametrize("kind", ["simple", "nature_cnn", "resnet"])
def test_each_row_s_features_and_the_gradients_are_those_of_the_whole_batch(kind):
    torch.manual_seed(1)
    side = {"simple": 20, "nature_cnn": 36, "resnet": 15}[kind]
    encoder = image_encoder(kind, (side, side, 3), 16)
    images = torch.rand(150, side, side, 3)  # floats, as an environment's images may be
    with torch.no_grad():
        whole = encoder(images)
        assert torch.allclose(encode_in_bounded_batches(encoder, images), whole, atol=1e-5)  # 2 chunks and 22 rows
    weights = torch.randn(150, 16)
    expected = torch.autograd.grad((encoder(images[:37]) * weights[:37]).sum(), list(encoder.parameters()))
    found = torch.autograd.grad((encode_in_bounded_batches(encoder, images[:37]) * weights[:37]).sum(),
                                list(encoder.parameters()))  # 37 rows run as 40: the padding takes no gradient
    for a, b in zip(found, expected):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # (the test's own record of the size)
def test_a_trace_sees_the_batch_as_it_is():
    class Bounded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = image_encoder("simple", (20, 20, 3), 8)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return encode_in_bounded_batches(encode, images)

    model = Bounded()
    encode, seen = _recording(model.encoder)
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(33, 20, 20, 3), check_trace=False)
    assert seen == {33}
    assert traced(torch.rand(70, 20, 20, 3)).shape == (70, 8)  # the batch dimension stayed free


def test_the_networks_image_features_go_through_the_bounds(monkeypatch):
    features = image_features([(4,), (20, 20, 3)], "simple", 8, towers=2)
    seen: list[int] = []
    first_layer = features.towers[1][0][1]
    first_layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        out = features(torch.zeros(100, 4), [torch.zeros(100, 4), torch.zeros(100, 20, 20, 3, dtype=torch.uint8)])
    assert out.shape == (2, 100, 12) and seen == [CHUNK, 40]
