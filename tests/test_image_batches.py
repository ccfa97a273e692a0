"""Image encoders see a bounded set of batch sizes (networks/image_batches.py): oneDNN keeps a
kernel, and megabytes, for every input shape it meets, and a visual run's value estimates meet a
new one every few updates."""

from __future__ import annotations

import copy

import pytest
import torch

from palaestra.networks import image_batches
from palaestra.networks.image_batches import CHUNK, EXACT, KEPT_WITH_GRADIENT, bounded_size, encode_in_bounded_batches
from palaestra.networks.visual import image_encoder, image_features


def test_bounded_sizes_cover_each_batch_with_at_most_a_quarter_more_rows():
    sizes = {n: bounded_size(n) for n in range(1, 5000)}
    assert all(n <= size for n, size in sizes.items())
    assert all(sizes[n] == n for n in range(1, EXACT + 1))
    assert all(size <= 1.25 * n for n, size in sizes.items() if n > EXACT)
    assert all(sizes[2 ** k] == 2 ** k for k in range(13))  # the usual mini-batch sizes run as they are
    assert sizes[EXACT + 1] == 20 and sizes[33] == 40 and sizes[1200] == 1280
    assert len(set(sizes.values())) <= EXACT + 4 * 9  # four sizes per doubling above EXACT


@pytest.fixture(autouse=True)
def no_sizes_met_yet(monkeypatch):
    monkeypatch.setattr(image_batches, "_sizes_with_gradient", set())


def _recording(encoder: torch.nn.Module, inputs: list | None = None) -> tuple[torch.nn.Module, set[int]]:
    seen: set[int] = set()

    def encode(images: torch.Tensor) -> torch.Tensor:
        seen.add(int(images.shape[0]))
        if inputs is not None:
            inputs.append(images.detach().clone())
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
    if not grad:  # value estimates: chunks of CHUNK rows, never more
        assert max(seen) == CHUNK and len(seen) == EXACT + 8
    else:  # a gradient's batch is not split; the first sizes met go through as they are (a run's mini-batches)
        kept = set(range(EXACT + 1, EXACT + 1 + KEPT_WITH_GRADIENT))
        assert max(seen) == bounded_size(300)
        assert seen == set(range(1, EXACT + 1)) | kept | {bounded_size(n) for n in range(EXACT + 1, 301) if n not in kept}


def test_the_rows_left_over_by_chunks_meet_no_size_of_their_own():
    # value estimates over a buffer of 300-odd rows: the last chunk's few rows would meet every
    # size up to EXACT, a kernel each
    encoder = image_encoder("simple", (20, 20, 3), 8)
    encode, seen = _recording(encoder)
    images = torch.randint(0, 256, (CHUNK * 3 + EXACT, 20, 20, 3), dtype=torch.uint8)
    with torch.no_grad():
        whole = encoder(images)
        for n in range(CHUNK * 2 + 1, len(images) + 1):
            assert torch.allclose(encode_in_bounded_batches(encode, images[:n]), whole[:n], atol=1e-5)
    assert seen == {EXACT} | {bounded_size(r) for r in range(EXACT + 1, CHUNK + 1)}  # (CHUNK among them)


def test_a_run_s_mini_batch_size_goes_through_as_it_is_whatever_comes_after():
    encoder = image_encoder("simple", (20, 20, 3), 8)
    encode, seen = _recording(encoder)
    images = torch.randint(0, 256, (300, 20, 20, 3), dtype=torch.uint8)
    encode_in_bounded_batches(encode, images[:100])  # the mini-batch size, met first
    for n in range(101, 200):  # then many sizes (a recurrent update's rows without their padding)
        encode_in_bounded_batches(encode, images[:n])
    seen.clear()
    encode_in_bounded_batches(encode, images[:100])
    encode_in_bounded_batches(encode, images[:150])
    assert seen == {100, 160}


def test_the_padding_is_zeros():
    encoder = image_encoder("simple", (20, 20, 3), 8)
    inputs: list[torch.Tensor] = []
    encode, _ = _recording(encoder, inputs)
    images = torch.rand(37, 20, 20, 3) + 1.0  # no zero anywhere
    with torch.no_grad():
        encode_in_bounded_batches(encode, images)
    (padded,) = inputs
    assert padded.shape[0] == 40 and torch.equal(padded[:37], images) and not padded[37:].any()


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


def test_gradients_through_float_images_are_those_of_the_whole_batch():
    """GAIL's gradient penalty differentiates the discriminator with respect to its inputs."""
    torch.manual_seed(2)
    encoder = image_encoder("simple", (20, 20, 3), 8)
    images = torch.rand(100, 20, 20, 3, requires_grad=True)
    for _ in range(KEPT_WITH_GRADIENT):  # (so that 100 rows are padded, not kept as a mini-batch size)
        image_batches._sizes_with_gradient.add(-1 - len(image_batches._sizes_with_gradient))
    expected = torch.autograd.grad(encoder(images).square().sum(), images)[0]
    found = torch.autograd.grad(encode_in_bounded_batches(encoder, images).square().sum(), images)[0]
    assert torch.allclose(found, expected, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_two_towers_on_two_threads_match_one_thread_beyond_the_exact_sizes(grad):
    torch.manual_seed(3)
    one = image_features([(20, 20, 3)], "simple", 8, towers=2)
    two = copy.deepcopy(one)
    two.on_two_threads()
    observations = [torch.randint(0, 256, (150, 20, 20, 3), dtype=torch.uint8)]
    with torch.set_grad_enabled(grad):
        a, b = one(torch.zeros(150, 0), observations), two(torch.zeros(150, 0), observations)
    assert torch.equal(a, b)
    if grad:
        ga = torch.autograd.grad(a.sum(), list(one.parameters()))
        gb = torch.autograd.grad(b.sum(), list(two.parameters()))
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_images_off_the_cpu_go_through_as_they_are():
    seen: list[int] = []

    def encode(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape[0])
        return images.new_zeros((images.shape[0], 8))

    with torch.no_grad():
        out = encode_in_bounded_batches(encode, torch.empty(150, 20, 20, 3, device="meta"))
    assert seen == [150] and out.shape == (150, 8)


def test_the_networks_image_features_go_through_the_bounds():
    features = image_features([(4,), (20, 20, 3)], "simple", 8, towers=2)
    seen: list[int] = []
    first_layer = features.towers[1][0][1]
    first_layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    with torch.no_grad():
        out = features(torch.zeros(100, 4), [torch.zeros(100, 4), torch.zeros(100, 20, 20, 3, dtype=torch.uint8)])
    assert out.shape == (2, 100, 12) and seen == [CHUNK, 40]
