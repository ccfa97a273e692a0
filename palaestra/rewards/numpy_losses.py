"""The CPU path of the reward signals' model updates: each loss and its parameters' gradients in
numpy, written into the model's ``.grad`` through views (networks/accelerator.py's layers); the
signal's torch Adam then steps. Each is its signal file's torch loss, term for term, checked
against autograd in tests/test_reward_signals.py.

At the batch sizes PPO's mini-batches bring (16 to 256 rows) a torch step of a few small networks
is mostly dispatch: curiosity's took about 2.7 ms for the 1-D test environment's 16 rows, while
the arithmetic is a few dozen small matrix products.

Curiosity (rewards/curiosity.py):

    encoded, encoded_next = encoder(obs), encoder(next_obs)          (one pass over both)
    forward  = mean(0.5 |forward_model([encoded, actions]) - encoded_next|^2)
    inverse  = mean(|predicted_c - actions_c|^2 + sum over branches of cross-entropy)
               with predicted = inverse([encoded, encoded_next])
    loss     = LOSS_SCALE (FORWARD_WEIGHT forward + INVERSE_WEIGHT inverse)

Gradients reach the encoder through all three of its uses (both encodings in the inverse model,
the encoding and the target in the forward model), as autograd's do.

RND (rewards/rnd.py): ``mean(|predictor(x) - target(x)|^2)`` over the normalized observations
reached, the target fixed.
"""

from __future__ import annotations

import numpy as np

from palaestra.networks.numpy_layers import Stack, log_softmax


def curiosity_gradients(encoder: Stack, inverse: Stack, forward: Stack, obs: np.ndarray, next_obs: np.ndarray,
                        actions: np.ndarray, continuous_size: int, branches: tuple[int, ...],
                        forward_weight: float, inverse_weight: float) -> tuple[float, float]:
    """Write the loss's gradients into the layers' gradient arrays; return (forward loss,
    inverse loss), the unweighted means. ``actions``: [B, continuous + one-hot branches]."""
    n = len(obs)
    encoder_cache: list = []
    encoded_both = encoder.forward(np.concatenate([obs, next_obs]), encoder_cache)
    encoded, encoded_next = encoded_both[:n], encoded_both[n:]
    size = encoded.shape[1]

    forward_cache: list = []
    error = forward.forward(np.concatenate([encoded, actions], 1), forward_cache) - encoded_next
    forward_loss = 0.5 * float((error * error).sum()) / n

    inverse_cache: list = []
    predicted = inverse.forward(np.concatenate([encoded, encoded_next], 1), inverse_cache)
    grad_predicted = np.empty_like(predicted)
    c = continuous_size
    difference = predicted[:, :c] - actions[:, :c]
    inverse_loss = float((difference * difference).sum())
    grad_predicted[:, :c] = 2.0 * difference
    start = c
    for branch in branches:
        part = slice(start, start + branch)
        logp = log_softmax(predicted[:, part])
        inverse_loss -= float((logp * actions[:, part]).sum())
        grad_predicted[:, part] = np.exp(logp) - actions[:, part]  # softmax - one-hot
        start += branch
    inverse_loss /= n

    grad_error = error * (forward_weight / n)
    grad_forward_in = forward.backward(grad_error, forward_cache, input_grad=True)
    grad_inverse_in = inverse.backward(grad_predicted * (inverse_weight / n), inverse_cache, input_grad=True)
    grad_encoded = np.empty_like(encoded_both)
    grad_encoded[:n] = grad_forward_in[:, :size] + grad_inverse_in[:, :size]
    grad_encoded[n:] = grad_inverse_in[:, size:] - grad_error
    encoder.backward(grad_encoded, encoder_cache)
    return forward_loss, inverse_loss


def rnd_gradients(predictor: Stack, target: Stack, x: np.ndarray) -> float:
    """Write the RND loss's gradients into the predictor's gradient arrays; return the loss."""
    cache: list = []
    difference = predictor.forward(x, cache) - target.forward(x)
    predictor.backward(difference * (2.0 / len(x)), cache)
    return float((difference * difference).sum()) / len(x)
