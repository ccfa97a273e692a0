"""The layers of a plain MLP network, each with its forward pass and its backward pass (to its
input and into its parameters' gradients) written once, in numpy. A step of a small network is
a hundred or so operations on a few hundred numbers: numpy dispatches one in about a
microsecond, torch in several. The module imports no torch, so environment workers act with it.
The arrays are views: of the torch parameters and their ``.grad`` in the main process
(networks/accelerator.py builds the layers from the torch module's own layers), of a local copy
of the published weights in an acting worker. A layer never copies them, so it is never stale.

Notation: B rows; a twin layer holds two networks of one shape stacked (``[2, out, in]`` weights,
``[2, 1, out]`` biases: networks/policy.py's TwinMLP) and maps
``[B, in]`` (both read the same input) or ``[2, B, in]`` to ``[2, B, out]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from palaestra.networks.constants import CLIP, MASKED_LOGIT

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
LOG_2 = math.log(2.0)
HALF = np.float32(0.5)


def swish(z):
    """(z sigmoid(z), sigmoid(z)): the sigmoid is kept for the backward pass. sigmoid(z) =
    (1 + tanh(z / 2)) / 2: unlike 1 / (1 + exp(-z)) it cannot overflow."""
    s = np.tanh(0.5 * z)
    s *= 0.5
    s += 0.5
    return z * s, s


def swish_in_place(z: np.ndarray) -> np.ndarray:
    """swish over the fresh array ``z``, overwriting it: acting keeps nothing for a backward pass."""
    s = np.tanh(z * HALF)  # (float32 scalars: a Python float costs a conversion per operation)
    s *= HALF
    s += HALF
    z *= s
    return z


def swish_grad(grad_h, z, s):
    """d/dz [z sigmoid(z)] = s (1 + z (1 - s)), times ``grad_h``."""
    return grad_h * (s * (1.0 + z * (1.0 - s)))


@dataclass(frozen=True)
class Kernels:
    """The element-wise kernels training uses for swish: numpy's here (acting workers import no
    torch); networks/accelerator.py swaps in torch's vectorized ones for large arrays."""

    swish: Callable = swish
    swish_grad: Callable = swish_grad
    swish_in_place: Callable = swish_in_place


NUMPY_KERNELS = Kernels()


def activate(kernels: Kernels, kind: str, z):
    """(activation(z), what its backward pass keeps)."""
    if kind == "swish":
        return kernels.swish(z)
    if kind == "tanh":
        return np.tanh(z), None
    if kind == "relu":
        return np.maximum(z, 0.0), None
    if kind:
        raise _unknown(kind)
    return z, None


def _unknown(kind: str) -> ValueError:
    """An activation these layers do not implement is an error, not the identity ("" is a layer
    without one): a kind added to the accelerator's ``ACTIVATION_OF`` needs its arithmetic in all
    three functions here."""
    return ValueError(f"activation {kind!r} has no numpy implementation in networks/numpy_layers.py")


def activate_in_place(kernels: Kernels, kind: str, z: np.ndarray) -> np.ndarray:
    """The same, overwriting the fresh array ``z``: acting keeps nothing for a backward pass."""
    if kind == "swish":
        kernels.swish_in_place(z)
    elif kind == "tanh":
        np.tanh(z, out=z)
    elif kind == "relu":
        np.maximum(z, 0.0, out=z)
    elif kind:
        raise _unknown(kind)
    return z


def activation_grad(kernels: Kernels, kind: str, grad_h, z, h, kept):
    if kind == "swish":
        return kernels.swish_grad(grad_h, z, kept)
    if kind == "tanh":
        return grad_h * (1.0 - h * h)  # tanh'(z) = 1 - tanh(z)^2
    if kind == "relu":
        return grad_h * (z > 0)  # torch's convention: 0 at z = 0
    if kind:
        raise _unknown(kind)
    return grad_h


class Dense:
    """A linear layer (``w`` [out, in], ``b`` [out]) and its activation. ``gw``, ``gb``: the
    gradient arrays, None for a network that only acts."""

    def __init__(self, kernels: Kernels, w, b, activation: str = "", gw=None, gb=None) -> None:
        self.kernels, self.w, self.b, self.activation, self.gw, self.gb = kernels, w, b, activation, gw, gb

    def linear(self, x):
        z = x @ self.w.T
        z += self.b
        return z

    def forward(self, x, cache: list | None = None):
        z = self.linear(x)
        if cache is None:
            return activate_in_place(self.kernels, self.activation, z)
        h, kept = activate(self.kernels, self.activation, z)
        cache.append((x, z, h, kept))
        return h

    def backward(self, grad_h, entry, weight_rows: int | None = None, input_grad: bool = True):
        """From d/d(output), write the parameters' gradients and return d/d(input) (None without
        ``input_grad``: where the input is data). ``weight_rows``: only the first this many rows
        train the parameters (0: none), as where one pass serves two losses and only one of them
        trains this layer."""
        x, z, h, kept = entry
        grad_z = activation_grad(self.kernels, self.activation, grad_h, z, h, kept)
        if weight_rows is None:
            self.weight_grad(grad_z, x)
        elif weight_rows:
            self.weight_grad(grad_z[..., :weight_rows, :], x[..., :weight_rows, :])
        if not input_grad:
            return None
        return self.input_grad(grad_z, x)

    def weight_grad(self, grad_z, x) -> None:
        np.matmul(grad_z.T, x, out=self.gw)
        np.sum(grad_z, 0, out=self.gb)

    def input_grad(self, grad_z, x):
        if self.w.shape[0] == 1:  # an outer product: broadcasting beats a matmul of inner size 1
            return grad_z * self.w
        return grad_z @ self.w


class Twin(Dense):
    """A twin layer (module docstring): ``w`` [2, out, in], ``b`` [2, 1, out].

    numpy's stacked (3-D) matmul misses BLAS's fast path for transposed or broadcast operands
    (measured 3-5x slower), so each tower gets its own 2-D product. Where both towers read the
    same input and the products are small, the stacked weight is one [in, 2 out] matrix (a free
    view) and one product serves both: it saves a call. From ``STACKED_BELOW`` output elements
    per tower it costs more than it saves: its output is [B, 2, out] in memory, which the bias
    and every later element-wise pass walk slowly, and with a thin input (SAC's critics read
    observation and action, 4 columns on Pendulum) OpenBLAS's threaded product of that layout
    took 0.24 ms against 0.012 ms per tower (256 rows, 256 units, two threads)."""

    STACKED_BELOW = 32768  # rows x units; measured equal there at one thread, per tower faster at two

    def _stacked(self, x) -> bool:
        return x.ndim == 2 and x.shape[0] * self.w.shape[1] < self.STACKED_BELOW

    def linear(self, x):
        w, b = self.w, self.b
        if self._stacked(x):
            out = w.shape[1]
            return (x @ w.reshape(2 * out, -1).T).reshape(x.shape[0], 2, out).transpose(1, 0, 2) + b
        z = np.empty((2, x.shape[-2], w.shape[1]), np.float32)
        for t in (0, 1):
            np.matmul(x if x.ndim == 2 else x[t], w[t].T, out=z[t])
        z += b
        return z

    def weight_grad(self, grad_z, x) -> None:
        if self._stacked(x):  # both towers read x: one product for both weight gradients
            out = self.gw.shape[1]
            flat = grad_z.transpose(1, 0, 2).reshape(-1, 2 * out)
            np.matmul(flat.T, x, out=self.gw.reshape(2 * out, -1))
            np.sum(flat, 0, out=self.gb.reshape(-1))
            return
        for t in (0, 1):
            np.matmul(grad_z[t].T, x if x.ndim == 2 else x[t], out=self.gw[t])
        np.sum(grad_z, 1, keepdims=True, out=self.gb)

    def input_grad(self, grad_z, x):
        """The gradient with respect to a shared ``[B, in]`` input sums both towers."""
        w = self.w
        if w.shape[1] == 1:  # [2, B, 1] x [2, 1, in]: an outer product, cheaper broadcast
            grad_x = grad_z * w
        else:
            grad_x = np.empty((2, grad_z.shape[1], w.shape[2]), np.float32)
            for t in (0, 1):
                np.matmul(grad_z[t], w[t], out=grad_x[t])
        return grad_x.sum(0) if x.ndim == 2 else grad_x


def first_rows(cache: list, n: int) -> list:
    """A forward pass's cache (``Dense.forward``) cut to its first ``n`` rows (views), for a
    backward pass through part of a batch that went forward together."""
    return [tuple(None if a is None else a[..., :n, :] for a in entry) for entry in cache]


class Stack:
    """Layers applied one after the other."""

    def __init__(self, layers: list[Dense]) -> None:
        self.layers = layers

    def forward(self, x, cache: list | None = None):
        for layer in self.layers:
            x = layer.forward(x, cache)
        return x

    def backward(self, grad, cache: list, weight_rows: int | None = None, input_grad: bool = False):
        """``cache`` as filled by ``forward``; d/d(input) if ``input_grad``, else None;
        ``weight_rows`` as :meth:`Dense.backward`."""
        for i in reversed(range(len(self.layers))):
            grad = self.layers[i].backward(grad, cache[i], weight_rows, input_grad=input_grad or i > 0)
        return grad


def tower(stack: Stack, t: int) -> Stack:
    """Tower ``t`` of a stack of twin layers, as plain layers over views of its weights and
    gradients: a network of its own, for a thread of its own (networks/two_threads.py)."""
    return Stack([Dense(layer.kernels, layer.w[t], layer.b[t, 0], layer.activation,
                        None if layer.gw is None else layer.gw[t], None if layer.gb is None else layer.gb[t, 0])
                  for layer in stack.layers])


class LSTMStep:
    """One step of a one-layer torch LSTM (``weight_ih`` [4 units, in], ``weight_hh`` [4 units,
    units], their biases; gates in torch's order: input, forget, cell, output), for acting;
    training runs whole sequences (:class:`LSTMSequences`)."""

    def __init__(self, w_ih, w_hh, b_ih, b_hh) -> None:
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = w_ih, w_hh, b_ih, b_hh

    def step(self, x, h, c):
        """``x`` [B, in], ``h`` and ``c`` [B, units] → the next (h, c), as transposed views.

        The gates are computed transposed, ``[4 units, B]``: ``w @ x.T`` takes OpenBLAS's fast
        path where ``x @ w.T`` with the weights as stored ([4 units, in]) does not (measured about
        twice as slow for 8 x 64 x 256), and each gate is then a contiguous block of rows."""
        units = h.shape[1]
        gates = self.w_ih @ x.T
        gates += self.w_hh @ h.T
        gates += self.b_ih[:, None]
        gates += self.b_hh[:, None]
        for sig in (gates[:2 * units], gates[3 * units:]):  # sigmoid(z) = (1 + tanh(z / 2)) / 2
            sig *= 0.5
            np.tanh(sig, out=sig)
            sig *= 0.5
            sig += 0.5
        c_next = gates[units:2 * units] * c.T
        c_next += gates[:units] * np.tanh(gates[2 * units:3 * units])
        return (gates[3 * units:] * np.tanh(c_next)).T, c_next.T


class LSTMSequences:
    """Each tower's one-layer torch LSTM (as :class:`LSTMStep`) run over N sequences of L rows
    from each sequence's stored starting memory, with its backward pass through time: PPO's
    update of a recurrent policy. ``cells``: per tower (``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh``); ``grads``: their gradient arrays, in the same order.

    A step of a small LSTM is a few dozen numpy calls on a few thousand numbers, so the layout
    keeps the calls few and their operands contiguous. Each step's gates are transposed
    (``[towers, 4 units, N]``, as ``LSTMStep`` computes them) and come from one product per tower,
    ``[W_ih | bias | W_hh] @ [x_t; 1; h_t]``: the step's input, a row of ones and the previous
    hidden state are stacked in one array (``stacked``, written up front for the inputs and by
    each step for its hidden state), and the same stacking makes every weight gradient one
    product per tower. Gates run in the order o, i, f, g (torch's is i, f, g, o) so that the
    three sigmoid gates are one block and the three the cell state's gradient reaches another;
    the weights are copied into that order at every call (a few microseconds), with the sigmoid
    gates' rows halved: sigmoid(z) = (1 + tanh(z / 2)) / 2, so one tanh serves all four gates.
    The backward pass keeps only the recursion through the hidden and cell states in its time
    loop; the gates' derivatives, the weights' gradients and the inputs' are computed over all
    steps at once."""

    def __init__(self, cells, grads=None) -> None:
        self.cells, self.grads = cells, grads
        self.units = cells[0][1].shape[1]
        self.inputs = cells[0][0].shape[1]
        u = self.units
        self.half = np.array([0.5] * (3 * u) + [1.0] * u, np.float32)[:, None]

    @staticmethod
    def _to_layout(out, torch_blocks) -> None:
        """Torch's gate blocks (i, f, g, o) into ``out`` in this layout's order (o, i, f, g)."""
        out[0] = torch_blocks[3]
        out[1:] = torch_blocks[:3]

    @staticmethod
    def _to_torch(out, blocks) -> None:
        """The inverse of ``_to_layout``: this layout's gate blocks into torch's order."""
        out[3] = blocks[0]
        out[:3] = blocks[1:]

    def _weights(self, k: int):
        """Tower ``k``'s ``[W_ih | bias | W_hh]`` ``[4 u, in + 1 + u]`` in this layout."""
        w_ih, w_hh, b_ih, b_hh = self.cells[k]
        u, n_in = self.units, self.inputs
        w = np.empty((4, u, n_in + 1 + u), np.float32)
        self._to_layout(w[..., :n_in], w_ih.reshape(4, u, n_in))
        self._to_layout(w[..., n_in], (b_ih + b_hh).reshape(4, u))
        self._to_layout(w[..., n_in + 1:], w_hh.reshape(4, u, u))
        return w.reshape(4 * u, n_in + 1 + u)

    def forward(self, x, memory, length: int):
        """``x`` ``[B, in]`` (every tower reads it) or ``[towers, B, in]``; ``memory``
        ``[N, towers × 2 units]`` at each sequence's start (networks/recurrent.py's layout) →
        ``[towers, B, units]`` and what ``backward`` needs."""
        T, u, n_in = len(self.cells), self.units, self.inputs
        B = x.shape[-2]
        N, L = B // length, length
        stacked = np.empty((L + 1, T, n_in + 1 + u, N), np.float32)  # [x_t; 1; h_t] per step and tower
        stacked[:L, :, :n_in] = (x.reshape(N, L, 1, n_in).transpose(1, 2, 3, 0) if x.ndim == 2 else
                                 x.reshape(T, N, L, n_in).transpose(2, 0, 3, 1))
        stacked[:, :, n_in] = 1.0
        start = memory.reshape(N, T, 2, u)
        stacked[0, :, n_in + 1:] = start[:, :, 0].transpose(1, 2, 0)
        hs = stacked[:, :, n_in + 1:]  # [L + 1, T, u, N]: the hidden states, a view
        weights = [self._weights(k) for k in range(T)]
        halved = [w * self.half for w in weights]
        gates = np.empty((L, T, 4 * u, N), np.float32)
        cs = np.empty((L + 1, T, u, N), np.float32)
        cs[0] = start[:, :, 1].transpose(1, 2, 0)
        tanh_c = np.empty((L, T, u, N), np.float32)
        for t in range(L):
            g = gates[t]
            for k in range(T):
                np.matmul(halved[k], stacked[t, k], out=g[k])
            np.tanh(g, out=g)
            sig = g[:, :3 * u]  # o, i, f
            sig *= 0.5
            sig += 0.5
            np.multiply(g[:, 2 * u:3 * u], cs[t], out=cs[t + 1])  # f c
            cs[t + 1] += g[:, u:2 * u] * g[:, 3 * u:]  # + i g
            np.tanh(cs[t + 1], out=tanh_c[t])
            np.multiply(g[:, :u], tanh_c[t], out=hs[t + 1])  # o tanh(c)
        out = hs[1:].transpose(1, 3, 0, 2).reshape(T, B, u)  # [L, T, u, N] → [T, N L, u]
        return out, (stacked, gates, cs, tanh_c, weights, x.ndim == 2)

    def backward(self, grad_out, kept, input_grad: bool = True):
        """From d/d(output) ``[towers, B, units]``, write the weights' gradients and return
        d/d(x) (None without ``input_grad``: where x is data)."""
        stacked, gates, cs, tanh_c, weights, shared = kept
        L, T, four_u, N = gates.shape
        u, n_in = self.units, self.inputs
        grad_h = np.ascontiguousarray(grad_out.reshape(T, N, L, u).transpose(2, 0, 3, 1))  # [L, T, u, N]
        o, i, f, g = gates[:, :, :u], gates[:, :, u:2 * u], gates[:, :, 2 * u:3 * u], gates[:, :, 3 * u:]
        # dc_t = dh_t o_t (1 - tanh(c_t)^2) + dc_{t+1} f_{t+1}; each gate's pre-activation gradient
        # is dh_t (o) or dc_t (i, f, g) times a factor known from the forward pass
        through_c = o * (1.0 - tanh_c * tanh_c)
        grad_z = np.empty_like(gates)  # the factors, then each step's gradients
        grad_z[:, :, :u] = tanh_c * o * (1.0 - o)
        grad_z[:, :, u:2 * u] = g * i * (1.0 - i)
        grad_z[:, :, 2 * u:3 * u] = cs[:-1] * f * (1.0 - f)
        grad_z[:, :, 3 * u:] = i * (1.0 - g * g)
        recurrent = [w[:, n_in + 1:].T for w in weights]  # W_hh^T: d/dh_{t-1} of a step's gates
        dh = np.empty((T, u, N), np.float32)
        dh_before = np.empty((T, u, N), np.float32)  # W_hh^T dz_t, the part of dh_{t-1} from step t
        dc = np.zeros((T, u, N), np.float32)
        for t in reversed(range(L)):
            if t == L - 1:
                dh[...] = grad_h[t]
            else:  # dc held dc_{t+1}
                np.add(grad_h[t], dh_before, out=dh)
                dc *= f[t + 1]
            dc += dh * through_c[t]
            z = grad_z[t]
            z[:, :u] *= dh
            cell_gates = z[:, u:].reshape(T, 3, u, N)  # i, f, g
            cell_gates *= dc[:, None]
            if t:
                for k in range(T):
                    np.matmul(recurrent[k], z[k], out=dh_before[k])
        grad_x = None
        for k, w in enumerate(weights):
            z = grad_z[:, k].transpose(1, 0, 2).reshape(four_u, L * N)  # time-major columns
            rows = stacked[:L, k].transpose(0, 2, 1).reshape(L * N, -1)  # [x_t; 1; h_t] per column
            grad = (z @ rows).reshape(4, u, -1)
            g_ih, g_hh, gb_ih, gb_hh = self.grads[k]
            self._to_torch(g_ih.reshape(4, u, n_in), grad[..., :n_in])
            self._to_torch(gb_ih.reshape(4, u), grad[..., n_in])
            self._to_torch(g_hh.reshape(4, u, u), grad[..., n_in + 1:])
            gb_hh[...] = gb_ih
            if input_grad:  # d/dx_t for every step at once: [L N, in], back to row order
                gx = (z.T @ w[:, :n_in]).reshape(L, N, n_in).transpose(1, 0, 2).reshape(N * L, n_in)
                if shared:
                    grad_x = gx if grad_x is None else grad_x + gx
                else:
                    if grad_x is None:
                        grad_x = np.empty((T, N * L, n_in), np.float32)
                    grad_x[k] = gx
        return grad_x


def normalize(obs, mean, var):
    """networks/normalizer.py's Normalizer (its statistics are data here, not parameters)."""
    return np.clip((obs - mean) / (var + 1e-8) ** 0.5, -CLIP, CLIP)


# -- action distributions: log-probabilities and entropies summed over dimensions and branches,
# as networks/distributions.py; the backward passes take d/d(log_prob) [B] and d/d(entropy)
# (one number, the same for every row, or one per row: a recurrent batch's padding rows have 0) -
class Gaussian:
    """A diagonal Gaussian with a learned, state-independent log-std (``log_std``, ``g_log_std``)."""

    def __init__(self, log_std, g_log_std=None) -> None:
        self.log_std, self.g_log_std = log_std, g_log_std

    def evaluate(self, mean, actions):
        """(log pi(actions), entropy, kept for ``backward``)."""
        inv_var = np.exp(-2.0 * self.log_std)
        diff = actions - mean
        log_prob = (-0.5 * diff**2 * inv_var - self.log_std - HALF_LOG_2PI).sum(1)
        entropy = float((0.5 + HALF_LOG_2PI + self.log_std).mean())  # per dimension, as distributions.py
        return log_prob, entropy, (diff, inv_var)

    def backward(self, grad_log_prob, grad_entropy: float, kept):
        """Write d/d(log_std); return d/d(mean)."""
        diff, inv_var = kept
        g = grad_log_prob[:, None]
        # dH/dlog_std = 1 / dimensions on every row (H: the mean over dimensions)
        entropy_total = np.sum(grad_entropy) if np.ndim(grad_entropy) else grad_entropy * len(grad_log_prob)
        self.g_log_std[...] = (g * (diff**2 * inv_var - 1.0)).sum(0) + entropy_total / self.log_std.size
        return g * diff * inv_var


class Categorical:
    """One masked categorical per branch over ``[B, sum(branches)]`` logits."""

    def __init__(self, branches) -> None:
        self.branches = list(branches)
        self.offsets = np.cumsum([0] + self.branches[:-1]).astype(np.int64)

    def _slices(self):
        if len(self.branches) == 1:
            return [slice(None)]
        return [slice(o, o + n) for o, n in zip(self.offsets, self.branches)]

    def evaluate(self, logits, allowed, taken):
        """(log pi(taken), entropy, kept for ``backward``); ``allowed`` None: nothing masked."""
        if allowed is not None:
            logits = np.where(allowed, logits, np.float32(MASKED_LOGIT))
        log_probs = np.empty_like(logits)
        for sl in self._slices():
            z = logits[:, sl] - logits[:, sl].max(1, keepdims=True)
            log_probs[:, sl] = z - np.log(np.exp(z).sum(1, keepdims=True))
        probs = np.exp(log_probs)
        rows = np.arange(len(logits))[:, None]
        columns = taken + self.offsets  # each branch's taken column
        plogp = probs * log_probs
        branch_entropy = [-plogp[:, sl].sum(1, keepdims=True) for sl in self._slices()]
        log_prob = log_probs[rows, columns].sum(1)
        entropy = branch_entropy[0][:, 0] if len(branch_entropy) == 1 else sum(e[:, 0] for e in branch_entropy)
        return log_prob, entropy, (probs, plogp, branch_entropy, rows, columns, allowed)

    def backward(self, grad_log_prob, grad_entropy: float, kept):
        """d/d(logits): d log p_a / dz = onehot(a) - p; dH/dz = -p (log p + H), per branch."""
        probs, plogp, branch_entropy, rows, columns, allowed = kept
        g = grad_log_prob[:, None]
        grad = -g * probs
        grad[rows, columns] += g  # one taken column per branch: no repeats
        if np.ndim(grad_entropy):
            grad_entropy = grad_entropy[:, None]
        for sl, e in zip(self._slices(), branch_entropy):
            grad[:, sl] -= grad_entropy * (plogp[:, sl] + probs[:, sl] * e)
        if allowed is not None:
            grad = np.where(allowed, grad, np.float32(0.0))
        return grad

    def sample(self, logits, allowed, gumbel: "RandomPool", deterministic: bool):
        """Masked actions per branch by Gumbel-max (as the torch policy and the ONNX model
        sample): (choices [n, branches], log-probability [n], entropy [n]). ``logits`` is a
        fresh array (modified in place)."""
        n = logits.shape[0]
        if allowed is not None:
            logits = np.where(allowed, logits, MASKED_LOGIT)
        choices = []
        log_prob = entropy = None
        for sl in self._slices():
            z = logits[:, sl]
            z -= z.max(axis=1, keepdims=True)
            ez = np.exp(z)
            total = ez.sum(axis=1)
            log_total = np.log(total)
            choice = z.argmax(axis=1) if deterministic else (z + gumbel.take(z.shape)).argmax(axis=1)
            choices.append(choice)
            # log p(choice) = z[choice] - log sum exp z;  H = log sum exp z - E_p[z]
            lp = z[np.arange(n), choice] - log_total
            ent = log_total - (ez * z).sum(axis=1) / total
            log_prob = lp if log_prob is None else log_prob + lp
            entropy = ent if entropy is None else entropy + ent
        disc = choices[0][:, None] if len(choices) == 1 else np.stack(choices, axis=1)
        return disc, log_prob, entropy


def log_softmax(x):
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def log_squash(u):
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
    return 2.0 * (LOG_2 - u - np.logaddexp(0.0, -2.0 * u))


def squashed_gaussian(mean, log_std, noise):
    """a = tanh(mean + std noise) and log pi(a) (networks/sac_networks.py: squashed_sample);
    also std and a, which the backward pass (``squashed_gaussian_grad``) needs."""
    std = np.exp(log_std)
    u = mean + std * noise
    a = np.tanh(u)
    log_prob = (-0.5 * noise * noise - log_std - log_squash(u)).sum(1) - mean.shape[1] * HALF_LOG_2PI
    return a, log_prob, std


def squashed_gaussian_grad(grad_a, grad_log_prob, a, std, noise):
    """(d/d(mean), d/d(log_std)) from d/d(a) and d/d(log pi(a)) [B, 1] through the
    reparameterization: d log pi / du = 2 tanh(u), d log pi / d log_std = -1 (u held)."""
    grad_u = grad_a * (1.0 - a * a) + grad_log_prob * 2.0 * a
    return grad_u, grad_u * std * noise - grad_log_prob


class RandomPool:
    """Random numbers drawn from a seeded generator in large blocks: one generator call per
    few thousand environment steps instead of one per step (same stream for the same seed)."""

    BLOCK = 1 << 16

    def __init__(self, rng: np.random.Generator, draw) -> None:
        self.rng = rng
        self.draw = draw
        self.pool = np.zeros(0, np.float32)
        self.pos = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = math.prod(shape)
        if self.pos + n > len(self.pool):
            self.pool = self.draw(self.rng, max(self.BLOCK, n))
            self.pos = 0
        out = self.pool[self.pos : self.pos + n].reshape(shape)
        self.pos += n
        return out
