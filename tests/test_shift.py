"""The reference ghost op against hand-computed tensors (§3.1, Eq. 1-2) and the straight-through gradient (Eq. 6)."""
import pytest
import torch
import torch.nn.functional as F

from ghostsr_plugin.ops.shift import (centre_offset, default_index, ghost_shift, ghost_shift_reference, offset_to_shift,
                                      shift2d, shift_to_offset)

# 3x3 map with values 1..9; rows y, columns x
MAP = torch.arange(1., 10.).view(1, 1, 3, 3)

# G[y, x] = I[y+dy, x+dx], zero outside: written out by hand for each of the 9 offsets of d = 1
EXPECTED = {
    (-1, -1): [[0, 0, 0], [0, 1, 2], [0, 4, 5]],
    (-1, 0): [[0, 0, 0], [1, 2, 3], [4, 5, 6]],
    (-1, 1): [[0, 0, 0], [2, 3, 0], [5, 6, 0]],
    (0, -1): [[0, 1, 2], [0, 4, 5], [0, 7, 8]],
    (0, 0): [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
    (0, 1): [[2, 3, 0], [5, 6, 0], [8, 9, 0]],
    (1, -1): [[0, 4, 5], [0, 7, 8], [0, 0, 0]],
    (1, 0): [[4, 5, 6], [7, 8, 9], [0, 0, 0]],
    (1, 1): [[5, 6, 0], [8, 9, 0], [0, 0, 0]],
}


def test_offset_index_matches_eq2():
    """k = (i_o-1)(2d+1) + (j_o-1) moves by (i_o-d-1, j_o-d-1); the centre is no move."""
    assert [offset_to_shift(k, 1) for k in range(9)] == [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert centre_offset(1) == 4 and centre_offset(2) == 12
    assert all(shift_to_offset(*offset_to_shift(k, 2), 2) == k for k in range(25))
    with pytest.raises(ValueError, match='outside the window'):
        shift_to_offset(2, 0, 1)


@pytest.mark.parametrize('shift', sorted(EXPECTED))
def test_each_of_the_nine_offsets(shift):
    k = shift_to_offset(*shift, 1)
    out = ghost_shift_reference(MAP, default_index(2, 1), k, 1)
    assert torch.equal(out[0, 0], MAP[0, 0])  # intrinsic channel untouched
    assert torch.equal(out[0, 1], torch.tensor(EXPECTED[shift], dtype=torch.float32))


def test_larger_window_d2():
    x = torch.arange(25.).view(1, 1, 5, 5)
    out = shift2d(x, 2, -2)
    expected = torch.zeros(5, 5)
    expected[0:3, 2:5] = x[0, 0, 2:5, 0:3]
    assert torch.equal(out[0, 0], expected)


@pytest.mark.parametrize('ratio,num_out', [(0.25, 8), (0.5, 8), (0.75, 8)])
def test_ratio_every_ghost_is_a_shifted_intrinsic(ratio, num_out):
    """λ c_o ghosts; ghost j comes from intrinsic j mod n, also for λ > 0.5 (more ghosts than intrinsics)."""
    num_in = round((1 - ratio) * num_out)
    x = torch.randn(2, num_in, 5, 7)
    index = default_index(num_out, num_in)
    out = ghost_shift_reference(x, index, shift_to_offset(1, -1, 1), 1)
    assert out.shape == (2, num_out, 5, 7)
    assert torch.equal(out[:, :num_in], x)
    for j in range(num_out - num_in):
        assert torch.equal(out[:, num_in + j], shift2d(x[:, j % num_in], 1, -1))
        assert not torch.equal(out[:, num_in + j], x[:, j % num_in])  # really moved, not a copy


def test_gather_map_and_memory_format():
    x = torch.randn(1, 3, 4, 4).to(memory_format=torch.channels_last)
    index = torch.tensor([4, 0, 5, 2, 1, 3])
    out = ghost_shift_reference(x, index, shift_to_offset(0, 1, 1), 1)
    moved = shift2d(x, 0, 1)
    assert torch.equal(out, torch.stack([moved[:, 1], x[:, 0], moved[:, 2], x[:, 2], x[:, 1], moved[:, 0]], 1))


def test_straight_through_gradient_equals_soft_path():
    """Alg. 1 line 8: G = conv(I, detach(W - S) + S). Our op has the same value and the same gradients w.r.t. I and
    W' (double precision), without the depth-wise conv."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(9, dtype=torch.float64, requires_grad=True)
    index = default_index(5, 3)
    weight = torch.randn(2, 5, 6, 5, dtype=torch.float64)

    probs = torch.softmax(logits, 0)
    k = int(probs.argmax())
    out = ghost_shift_reference(x, index, k, 1, probs)
    (out * weight).sum().backward()
    grad_logits, grad_x = logits.grad.clone(), x.grad.clone()

    logits.grad, x.grad = None, None
    probs = torch.softmax(logits, 0)
    hard = F.one_hot(torch.tensor(k), 9).double()
    w_ste = (hard - probs).detach() + probs
    sources = x[:, index[3:] - 3]
    ghosts = F.conv2d(sources, w_ste.view(1, 1, 3, 3).expand(2, 1, 3, 3), padding=1, groups=2)
    soft = torch.cat([x, ghosts], 1)
    assert torch.allclose(soft, out, atol=1e-12)
    (soft * weight).sum().backward()
    assert torch.allclose(logits.grad, grad_logits, atol=1e-12)
    assert torch.allclose(x.grad, grad_x, atol=1e-12)


@pytest.mark.parametrize('slope', [0.0, 0.2, 0.01])
@pytest.mark.parametrize('backend', ['auto', 'reference'])
def test_fused_leaky_relu_equals_the_separate_ops(backend, slope, monkeypatch):
    """``relu=True, negative_slope=s`` is ``F.leaky_relu(Y, s)`` (``torch.relu`` for s = 0), then ``* scale`` and
    ``residual +``: the same values and gradients with either backend (exact for x and the residual; the compiled
    op sums the gradient to S(W') in another order)."""
    monkeypatch.setenv('GHOSTSR_BACKEND', backend)
    torch.manual_seed(0)
    index = torch.tensor([0, 4, 1, 5, 2, 3])
    for residual, scale in ((None, 1.0), (torch.randn(2, 6, 5, 4, requires_grad=True), 0.2)):
        x = torch.randn(2, 3, 5, 4, requires_grad=True)
        probs = torch.softmax(torch.randn(9), 0).requires_grad_()
        inputs = [t for t in (x, probs, residual) if t is not None]
        grad = torch.randn(2, 6, 5, 4)
        out = ghost_shift(x, index, 2, 1, probs, residual=residual, scale=scale, relu=True, negative_slope=slope)
        y = ghost_shift_reference(x, index, 2, 1, probs)
        expected = F.leaky_relu(y, slope) if slope else torch.relu(y)
        if residual is not None:
            expected = residual + expected * scale
        assert torch.equal(out, expected)
        ours, ref = torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)
        assert torch.equal(ours[0], ref[0]) and all(torch.equal(a, b) for a, b in zip(ours[2:], ref[2:]))
        torch.testing.assert_close(ours[1], ref[1])


@pytest.mark.parametrize('call,message', [
    (lambda x, i: ghost_shift_reference(x, i, 9, 1), 'offset index must be an integer in \\[0, 8\\]'),
    (lambda x, i: ghost_shift_reference(x, i, 4, 0), 'd must be an integer >= 1'),
    (lambda x, i: ghost_shift_reference(x, torch.tensor([0, 6]), 4, 1), 'channel map values must lie in \\[0, 5\\]'),
    (lambda x, i: ghost_shift_reference(x, i.int(), 4, 1), 'channel map must be a 1-D int64 tensor'),
    (lambda x, i: ghost_shift_reference(x.long(), i, 4, 1), 'must be floating point'),
    (lambda x, i: ghost_shift_reference(x, i, 4, 1, torch.ones(3)), 'offset probabilities must have shape \\(9,\\)'),
])
def test_bad_input(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(torch.randn(1, 3, 4, 4), default_index(6, 3))
