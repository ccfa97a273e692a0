"""The CPU path of the reward signals' models: each loss and its parameters' gradients in
numpy, written into the model's ``.grad`` through views (networks/accelerator.py's layers); the
signal's torch Adam then steps. Each is its signal file's torch loss, term for term, checked
against autograd (tests/test_reward_signals.py, tests/test_gail.py). Also each model's forward
pass for its rewards, which PPO asks for with every step's finished segments (a few dozen rows:
torch's dispatch cost 0.3-0.5 ms a call there, several times numpy's).

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

GAIL (rewards/gail.py, without VAIL): the discriminator's loss and its parameters' gradients,
gradient penalty included. Autograd's step of the few small layers, with the penalty's double
backward, is several hundred small operations of a few microseconds of dispatch each, while the
arithmetic is a dozen matrix products. Written out here a step of CartPole's 64-unit
discriminator at batch 256 takes about 1.1 ms against autograd's 2.9 ms (bench/gail_step.py),
most of it those products.

The network (rewards/gail.py's Discriminator): ``h_0 = x``, ``z_k = h_(k-1) W_k^T + b_k``,
``h_k = swish(z_k)`` for each hidden layer, ``l = h_L w^T + c``, ``D = sigmoid(l)``. The loss:

    -mean(log(D(expert) + eps)) - mean(log(1 - D(policy) + eps)) + weight x mean((|dD/dx|_eps - 1)^2)

with the penalty at ``x = alpha expert + (1 - alpha) policy`` (``alpha`` per input value) and
``|g|_eps = sqrt(sum g^2 + eps)``, ML-Agents' safe norm (rewards/gail.py's ``discriminator_loss``
is the definition that trains; this computes the same by hand). Its gradient needs the derivative
of ``dD/dx`` with respect to the parameters: the chain that computes ``dD/dx`` (``delta``
below) is run forward and then backward, and what flows back into its ``z_k`` and ``l`` joins
the ordinary backward pass of the penalty's rows. One forward pass serves the three sets of rows
(expert, policy, between) stacked.
"""

from __future__ import annotations

import numpy as np

from palaestra.networks.numpy_layers import Stack, log_softmax

EPSILON = 1e-7  # GAIL's guard inside its logarithms (rewards/gail.py)


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


def curiosity_error(encoder: Stack, forward: Stack, obs: np.ndarray, next_obs: np.ndarray,
                    actions: np.ndarray) -> np.ndarray:
    """CuriosityModel.forward_error per row: 0.5 |forward_model([encoded, actions]) - encoded_next|^2."""
    n = len(obs)
    encoded_both = encoder.forward(np.concatenate([obs, next_obs]))
    error = forward.forward(np.concatenate([encoded_both[:n], actions], 1)) - encoded_both[n:]
    return 0.5 * (error * error).sum(1)


def rnd_error(predictor: Stack, target: Stack, x: np.ndarray) -> np.ndarray:
    """RNDModel.error per row over normalized observations: |predictor(x) - target(x)|^2."""
    difference = predictor.forward(x) - target.forward(x)
    return (difference * difference).sum(1)


def rnd_gradients(predictor: Stack, target: Stack, x: np.ndarray) -> float:
    """Write the RND loss's gradients into the predictor's gradient arrays; return the loss."""
    cache: list = []
    difference = predictor.forward(x, cache) - target.forward(x)
    predictor.backward(difference * (2.0 / len(x)), cache)
    return float((difference * difference).sum()) / len(x)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) = (1 + tanh(z / 2)) / 2, which cannot overflow."""
    s = np.multiply(z, 0.5)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def _swish_second(z: np.ndarray, s: np.ndarray) -> np.ndarray:
    """swish''(z) = s (1 - s) (2 + z (1 - 2 s)), s = sigmoid(z), computed in place."""
    a = 1.0 - s
    a *= s
    c = np.multiply(s, 2.0)
    np.subtract(1.0, c, out=c)
    c *= z
    c += 2.0
    a *= c
    return a


def discriminator_estimate(hidden: list[tuple[np.ndarray, np.ndarray]], out: tuple[np.ndarray, np.ndarray],
                           x: np.ndarray) -> np.ndarray:
    """D per row for inputs ``x`` [B, inputs] (the weights as :func:`discriminator_gradients` takes them)."""
    h = x
    for w, b in hidden:
        z = h @ w.T
        z += b
        h = z * _sigmoid(z)
    return _sigmoid(h @ out[0].T + out[1])[:, 0]


def discriminator_gradients(hidden: list[tuple[np.ndarray, np.ndarray]], out: tuple[np.ndarray, np.ndarray],
                            expert: np.ndarray, policy: np.ndarray, alpha: np.ndarray, penalty_weight: float,
                            into: list[np.ndarray]) -> dict[str, float]:
    """Write the gradients of the loss above for ``hidden`` = [(W_k, b_k)] (torch's layouts: ``W_k``
    is [out, in]) and ``out`` = (w [1, H], c [1]) into ``into``, arrays of those shapes in that
    order: [gW_1, gb_1, ..., gw, gc]. ``expert`` and ``policy`` are [B, inputs], ``alpha`` the
    penalty's interpolation weights, [B, inputs] (or [B, 1]: one per row). Return the stats (the
    whole loss, the penalty's term alone, and the mean D of either batch)."""
    n = len(expert)
    x = np.concatenate([expert, policy, alpha * expert + (1.0 - alpha) * policy])
    hs, zs, sig, slope = [x], [], [], []
    for w, b in hidden:
        z = hs[-1] @ w.T
        z += b
        s = _sigmoid(z)
        zs.append(z)
        sig.append(s)
        t = 1.0 - s  # swish'(z) = s (1 + z (1 - s)), for both backward passes (in place: the same
        t *= z  # operations in the same order, fewer arrays)
        t += 1.0
        t *= s
        slope.append(t)
        hs.append(z * s)
    w_out, c_out = out
    d = _sigmoid(hs[-1] @ w_out.T + c_out)  # [3B, 1]
    d_expert, d_policy, d_between = d[:n], d[n:2 * n], d[2 * n:]
    loss = -(np.log(d_expert + EPSILON).mean() + np.log(1.0 - d_policy + EPSILON).mean())

    # the swish's first and second derivatives at the penalty's rows
    swish1 = [d[2 * n:] for d in slope]
    swish2 = [_swish_second(z[2 * n:], s[2 * n:]) for z, s in zip(zs, sig)]

    # dD/dx at the penalty's rows: delta_h_L = D (1 - D) w, back through the layers
    delta_l = d_between * (1.0 - d_between)  # [B, 1]
    delta_h = [None] * (len(hidden) + 1)
    delta_z = [None] * len(hidden)
    delta_h[-1] = delta_l * w_out
    for k in range(len(hidden) - 1, -1, -1):
        delta_z[k] = delta_h[k + 1] * swish1[k]
        delta_h[k] = delta_z[k] @ hidden[k][0]
    g = delta_h[0]
    norm = np.sqrt((g * g).sum(1, keepdims=True) + EPSILON)  # ML-Agents' safe norm
    penalty = penalty_weight * float(np.square(norm - 1.0).mean())
    grad_g = penalty_weight * 2.0 * (norm - 1.0) / norm * g / n

    # back through the chain that made dD/dx: into the weights, and into z_k and l
    grads_w, grads_b = into[0:-2:2], into[1:-2:2]
    into_z = [None] * len(hidden)
    grad_delta_h = grad_g
    for k in range(len(hidden)):
        np.matmul(delta_z[k].T, grad_delta_h, out=grads_w[k])
        grad_delta_z = grad_delta_h @ hidden[k][0].T
        grad_delta_h = grad_delta_z * swish1[k]
        grad_delta_z *= delta_h[k + 1]  # (no longer needed as itself)
        grad_delta_z *= swish2[k]
        into_z[k] = grad_delta_z
    grad_w_out, grad_c_out = into[-2], into[-1]
    np.matmul(delta_l.T, grad_delta_h, out=grad_w_out)
    grad_delta_l = grad_delta_h @ w_out.T
    into_l = grad_delta_l * delta_l * (1.0 - 2.0 * d_between)

    # the ordinary backward pass of all rows: the cross-entropy's rows and the penalty's
    grad_l = np.concatenate([-(d_expert * (1.0 - d_expert)) / (d_expert + EPSILON) / n,
                             d_policy * (1.0 - d_policy) / (1.0 - d_policy + EPSILON) / n, into_l])
    grad_w_out += grad_l.T @ hs[-1]
    grad_l.sum(0, out=grad_c_out)
    grad_h = grad_l * w_out  # [3B, 1] x [1, H]: an outer product (one term per entry, as the matmul's)
    for k in range(len(hidden) - 1, -1, -1):
        grad_z = grad_h  # (a fresh array each time: the broadcast above, the product below)
        grad_z *= slope[k]
        grad_z[2 * n:] += into_z[k]
        grads_w[k] += grad_z.T @ hs[k]
        grad_z.sum(0, out=grads_b[k])
        if k:
            grad_h = grad_z @ hidden[k][0]
    return {"Losses/GAIL Loss": float(loss) + penalty, "Policy/GAIL Grad Mag Loss": penalty,
            "Policy/GAIL Expert Estimate": float(d_expert.mean()),
            "Policy/GAIL Policy Estimate": float(d_policy.mean())}
