"""The compiled ghost-shift op (``kernels/``, ``torch.ops.ghostsr``) against the plain-PyTorch reference (§3.1, Eq. 1-6).

What is compared, and how strictly:

* forward: ``torch.equal`` for every dtype (fp32, fp16, bf16, fp64), NCHW and channels_last, every offset of d=1
  and some of d=2, λ ∈ {0.25, 0.5, 0.75}, odd sizes, batch > 1, the default map and random gather maps (sources
  shared by several output channels). The op only moves values, so anything but equality is a bug.
* gradient to the features: ``torch.equal`` when every source channel feeds at most one intrinsic and one ghost
  output (the default map): then each element is ``a`` or ``a + b`` and no summation order exists. With shared
  sources the order matters in principle; the kernel adds in the reference's order (ascending output channel,
  rounding to the dtype at each step, then intrinsic + moved ghost sum), so it is compared with ``allclose``
  for every dtype and, separately, shown bit-identical on the CPU (``test_grad_x_shared_sources_bitwise_on_cpu``).
* gradient to S(W') (Eq. 6): ``allclose`` against the reference computed in float64 (the kernel accumulates in
  float/double, the reference sums in the tensor's own dtype).
* ``gradcheck`` in float64 for the features; the straight-through gradient is checked against autograd of its
  soft surrogate ``sum_k S_k shift_k(I)``.
* the fused epilogue ``residual + scale * act(Y)`` (act: ReLU, leaky ReLU, PReLU or none): ``torch.equal`` against
  ``torch.relu`` / ``F.leaky_relu`` / ``F.prelu``, ``* scale`` and ``residual +`` run one after the other, forward
  and gradients (the PReLU slopes' gradient, a sum over N, H, W, against ``F.prelu`` on Y in the op's output
  layout: PyTorch's own sum order depends on the layout).

Every test that needs the compiled extension fails (not skips) when it is missing, so CI notices a broken build,
unless ``GHOSTSR_NO_EXT=1`` says the build was skipped on purpose; the fallback and input-check tests run either way.
"""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

import ghostsr_plugin  # noqa: F401  (registration)
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.ops import backend
from ghostsr_plugin.ops.ghost_conv import GhostConv2d, num_intrinsic_channels
from ghostsr_plugin.ops.shift import default_index, ghost_shift_reference, offset_to_shift, shift2d, window_size

NO_EXT = os.environ.get('GHOSTSR_NO_EXT') == '1'
requires_ext = pytest.mark.skipif(NO_EXT, reason='GHOSTSR_NO_EXT=1: the compiled extension was not built on purpose')

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = ['nchw', 'channels_last']
RATIOS = [0.25, 0.5, 0.75]
OFFSETS = [(1, k) for k in range(9)] + [(2, k) for k in (0, 3, 7, 12, 16, 21, 24)]
C_OUT, N, H, W = 8, 2, 7, 9  # odd sizes, batch > 1

op = torch.ops.ghostsr


def features(n, dtype, layout, seed=0, shape=(N, H, W)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape[0], n, shape[1], shape[2], generator=gen, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def maps(n, c_out=C_OUT, seed=0):
    """The default [I, G] map and a random gather map whose sources repeat (several outputs per source)."""
    gen = torch.Generator().manual_seed(seed)
    return {'default': default_index(c_out, n), 'random': torch.randint(0, 2 * n, (c_out, ), generator=gen)}


def unique_sources(index, n):
    """True when no entry of [I, G] feeds two output channels (no summation in the gradient to x)."""
    return len(set(index.tolist())) == index.numel()


def reference_grad_x(x, index, offset, d, grad):
    xr = x.detach().clone().requires_grad_()
    ghost_shift_reference(xr, index, offset, d).backward(grad)
    return xr.grad


# ---------------------------------------------------------------------------------------------------------------
# The compiled op is built and is what runs.


@requires_ext
def test_extension_is_built_and_selected():
    """CI must fail when the C++ extension did not build: import it directly, no fallback."""
    from ghostsr_plugin import _C  # noqa: F401
    assert backend.compiled_available()
    assert backend.backend_name('cpu') == 'cpp'
    assert backend.backend_name(torch.device('cpu')) == 'cpp'
    assert backend.backend_name('cuda') == ('cuda' if _C.WITH_CUDA else 'reference')
    assert torch._C._dispatch_has_kernel_for_dispatch_key('ghostsr::ghost_shift', 'CPU')


@requires_ext
def test_ghost_layer_dispatches_the_cpp_op():
    """A GhostConv2d forward and backward run ghostsr::ghost_shift (+ its backward ops), not the reference's ops."""
    torch.manual_seed(0)
    layer = GhostConv2d(4, 8, 3, shift_mode='learnable').train()
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    with torch.profiler.profile() as prof:
        layer(x).square().sum().backward()
    names = {event.name for event in prof.events()}
    assert {'ghostsr::ghost_shift', 'ghostsr::ghost_shift_backward', 'ghostsr::ghost_shift_offset_grad'} <= names
    assert not names & {'aten::index_select', 'aten::cat', 'aten::index_add_'}, names


def test_reference_forced_by_environment(monkeypatch):
    monkeypatch.setenv('GHOSTSR_BACKEND', 'reference')
    assert backend.backend_name('cpu') == 'reference'
    x, index = features(4, torch.float32, 'nchw'), default_index(8, 4)
    with torch.profiler.profile() as prof:
        out = backend.ghost_shift(x, index, 3, 1)
    assert 'ghostsr::ghost_shift' not in {event.name for event in prof.events()}
    assert torch.equal(out, ghost_shift_reference(x, index, 3, 1))
    monkeypatch.setenv('GHOSTSR_BACKEND', 'fast')
    with pytest.raises(ValueError, match='GHOSTSR_BACKEND'):
        backend.backend_name('cpu')


def test_one_warning_when_falling_back(monkeypatch):
    """Without the extension the reference runs, and says so once."""
    monkeypatch.setattr(backend, '_compiled', False)
    monkeypatch.setattr(backend, '_load_error', ImportError('simulated'))
    monkeypatch.setattr(backend, '_warned', set())
    assert backend.backend_name('cpu') == 'reference'
    x, index = features(4, torch.float32, 'nchw'), default_index(8, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            out = backend.ghost_shift(x, index, 3, 1)
    assert len([w for w in caught if 'compiled ghost-shift op not available' in str(w.message)]) == 1
    assert torch.equal(out, ghost_shift_reference(x, index, 3, 1))


@requires_ext
def test_unsupported_device_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(backend, '_warned', set())
    x, index = torch.empty(1, 4, 5, 5, device='meta'), default_index(8, 4, device='meta')
    assert backend.backend_name('meta') == 'reference'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        out = [backend.ghost_shift(x, index, 3, 1) for _ in range(2)][-1]
    assert len([w for w in caught if 'no kernel for meta' in str(w.message)]) == 1
    assert out.shape == (1, 8, 5, 5)


# ---------------------------------------------------------------------------------------------------------------
# Forward: exact.


@requires_ext
@pytest.mark.parametrize('ratio', RATIOS)
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_forward_exact(dtype, layout, ratio):
    n = num_intrinsic_channels(C_OUT, ratio)
    x = features(n, dtype, layout)
    for name, index in maps(n).items():
        for d, k in OFFSETS:
            out = op.ghost_shift(x, index, k, d)
            assert torch.equal(out, ghost_shift_reference(x, index, k, d)), (name, d, k)
            assert out.dtype == dtype and out.shape == (N, C_OUT, H, W)
            memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
            assert out.is_contiguous(memory_format=memory_format), 'output keeps the input layout'


@requires_ext
@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 1, 5), (2, 5, 1), (0, 4, 4), (1, 2, 2), (2, 17, 33)])
def test_forward_exact_edge_sizes(shape):
    """Sizes smaller than the move (everything zero), single rows/columns, empty batch, wider planes."""
    for layout in LAYOUTS:
        for dtype in (torch.float32, torch.float16):
            x = features(3, dtype, layout, shape=shape)
            for index in maps(3, c_out=7).values():
                for d, k in [(1, 0), (1, 5), (2, 0), (2, 24), (3, 1)]:
                    assert torch.equal(op.ghost_shift(x, index, k, d), ghost_shift_reference(x, index, k, d))


@requires_ext
def test_forward_non_contiguous_inputs():
    """Strided views (channel slice, transposed planes, expanded batch) give the reference's values."""
    base = torch.randn(2, 10, 9, 7)
    views = [base[:, 2:6], base.transpose(2, 3), base[:1].expand(3, -1, -1, -1), base[:, :, ::2, 1::2],
             base.contiguous(memory_format=torch.channels_last)[:, 3:7]]
    for x in views:
        n = x.shape[1]
        index = maps(n, c_out=n + 3)['random']
        assert torch.equal(op.ghost_shift(x, index, 2, 1), ghost_shift_reference(x, index, 2, 1))
        assert torch.equal(backend.ghost_shift(x, index, 7, 1), ghost_shift_reference(x, index, 7, 1))
    index = torch.arange(8).repeat(2)[::2]  # a non-contiguous channel map: 0, 2, 4, 6, 0, 2, 4, 6
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(op.ghost_shift(x, index, 1, 1), ghost_shift_reference(x, index, 1, 1))


@requires_ext
def test_forward_wide_maps_threads():
    """Larger maps split over row blocks and threads give the same result with 1 and 2 threads."""
    x = features(16, torch.float32, 'nchw', shape=(1, 300, 130))
    index = maps(16, c_out=24)['random']
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op.ghost_shift(x, index, 6, 1), op.ghost_shift_offset_grad(torch.ones(1, 24, 300, 130), x, index, 1)
        torch.set_num_threads(2)
        two = op.ghost_shift(x, index, 6, 1), op.ghost_shift_offset_grad(torch.ones(1, 24, 300, 130), x, index, 1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], ghost_shift_reference(x, index, 6, 1)) and torch.equal(one[0], two[0])
    assert torch.equal(one[1], two[1]), 'offset gradient does not depend on the thread count'


# ---------------------------------------------------------------------------------------------------------------
# Backward.


@requires_ext
@pytest.mark.parametrize('ratio', RATIOS)
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_grad_x(dtype, layout, ratio):
    """Exact for maps without shared sources; allclose otherwise (see the module docstring)."""
    n = num_intrinsic_channels(C_OUT, ratio)
    x = features(n, dtype, layout)
    for name, index in maps(n).items():
        for d, k in OFFSETS:
            grad = features(C_OUT, dtype, layout, seed=k + 10 * d)
            ours = op.ghost_shift_backward(grad, index, k, d, n)
            ref = reference_grad_x(x, index, k, d, grad)
            assert ours.dtype == dtype and ours.shape == x.shape
            if unique_sources(index, n):
                assert torch.equal(ours, ref), (name, d, k)
            else:
                tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
                torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_grad_x_shared_sources_bitwise_on_cpu(dtype, layout):
    """With sources shared by several outputs, the CPU kernel sums in the reference's order: bit-identical."""
    n = 3
    x = features(n, dtype, layout)
    for seed in range(3):
        index = maps(n, c_out=11, seed=seed)['random']
        for d, k in [(1, 0), (1, 4), (1, 5), (2, 17)]:
            grad = features(11, dtype, layout, seed=seed + k)
            assert torch.equal(op.ghost_shift_backward(grad, index, k, d, n), reference_grad_x(x, index, k, d, grad))


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_grad_probs(dtype, layout):
    """The straight-through gradient of Eq. 6 (K reductions) against the reference, computed in float64."""
    for ratio in RATIOS:
        n = num_intrinsic_channels(C_OUT, ratio)
        x = features(n, dtype, layout)
        for index in maps(n).values():
            for d in (1, 2):
                grad = features(C_OUT, dtype, layout, seed=d)
                probs = torch.softmax(torch.randn(window_size(d), dtype=torch.float64), 0).requires_grad_()
                ghost_shift_reference(x.double(), index, 0, d, probs).backward(grad.double())
                ours = op.ghost_shift_offset_grad(grad, x, index, d)
                assert ours.shape == (window_size(d), )
                assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
                torch.testing.assert_close(ours.double(), probs.grad, rtol=1e-5, atol=1e-4)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
def test_autograd_through_backend_matches_reference(layout):
    """backend.ghost_shift with probs: same output, same dL/dx, allclose dL/dS(W'), probs dtype kept."""
    for dtype in DTYPES:
        x = features(4, dtype, layout).requires_grad_()
        index = maps(4)['random']
        probs = torch.softmax(torch.randn(9), 0).requires_grad_()
        grad = features(C_OUT, dtype, layout, seed=3)
        results = []
        for fn in (backend.ghost_shift, ghost_shift_reference):
            x.grad = probs.grad = None
            out = fn(x, index, 5, 1, probs)
            out.backward(grad)
            results.append((out.detach(), x.grad.clone(), probs.grad.clone()))
        (out, gx, gp), (ref_out, ref_gx, ref_gp) = results
        assert torch.equal(out, ref_out)
        tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
        torch.testing.assert_close(gx, ref_gx, rtol=tol, atol=tol)
        assert gp.dtype == probs.dtype
        torch.testing.assert_close(gp, ref_gp, rtol=5e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5,
                                   atol=5e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
def test_gradcheck_float64(layout):
    for d, k in [(1, 2), (1, 6), (2, 9)]:
        index = maps(3, c_out=7)['random']
        x = features(3, torch.float64, layout, shape=(2, 5, 6)).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: op.ghost_shift(t, index, k, d), (x, ))
        assert torch.autograd.gradcheck(lambda t: backend.ghost_shift(t, index, k, d), (x, ))


@requires_ext
def test_offset_gradient_is_the_soft_surrogate_gradient():
    """dL/dS_k of Eq. 6 equals the exact gradient of sum_k S_k shift_k(I) for the ghost channels (float64)."""
    d, n = 1, 3
    x = features(n, torch.float64, 'nchw', shape=(2, 5, 6))
    index = maps(n, c_out=7)['random']
    ghost = index >= n
    grad = features(7, torch.float64, 'nchw', seed=4, shape=(2, 5, 6))
    probs = torch.softmax(torch.randn(window_size(d), dtype=torch.float64), 0).requires_grad_()
    sources = x.index_select(1, index[ghost] - n)
    soft = sum(probs[k] * shift2d(sources, *offset_to_shift(k, d)) for k in range(window_size(d)))
    soft.backward(grad[:, ghost])
    torch.testing.assert_close(op.ghost_shift_offset_grad(grad, x, index, d), probs.grad, rtol=1e-12, atol=1e-12)


@requires_ext
def test_opcheck():
    """torch.library.opcheck: schema, fake function, autograd registration and AOT dispatch agree."""
    index = maps(3, c_out=7)['random']
    for layout in LAYOUTS:
        x = features(3, torch.float64, layout, shape=(2, 5, 6)).requires_grad_()
        probs = torch.softmax(torch.randn(9, dtype=torch.float64), 0).requires_grad_()
        torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1))
        torch.library.opcheck(op.ghost_shift.default, (x, index, 8, 1, probs))
        grad = features(7, torch.float64, layout, shape=(2, 5, 6))
        torch.library.opcheck(op.ghost_shift_backward.default, (grad, index, 3, 1, 3))
        torch.library.opcheck(op.ghost_shift_offset_grad.default, (grad, x.detach(), index, 1))


# ---------------------------------------------------------------------------------------------------------------
# The fused epilogue: residual + scale * act(Y), as the separate ops compute it.

EPILOGUES = [dict(relu=True), dict(residual=True), dict(residual=True, scale=0.1), dict(relu=True, scale=-0.3),
             dict(relu=True, residual=True, scale=0.5), dict(relu=True, negative_slope=0.2),
             dict(relu=True, negative_slope=0.01, scale=0.5), dict(relu=True, negative_slope=0.2, residual=True),
             dict(relu=True, negative_slope=0.01, residual=True, scale=-0.3), dict(relu=True, negative_slope=-0.3)]


def epilogue_args(epilogue, residual):
    """The keyword arguments of the epilogue in ``EPILOGUES`` with its residual tensor (or None)."""
    return dict(residual=residual, scale=epilogue.get('scale', 1.0), relu=epilogue.get('relu', False),
                negative_slope=epilogue.get('negative_slope', 0.0))


def separate_ops(out, residual=None, scale=1.0, relu=False, negative_slope=0.0):
    """The ops the epilogue fuses, one after the other, as a residual block runs them."""
    if relu:
        out = F.leaky_relu(out, negative_slope) if negative_slope else torch.relu(out)
    if scale != 1.0 or residual is not None:
        out = out * scale
    return out if residual is None else residual + out


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_epilogue_forward_exact(dtype, layout):
    n = 4
    x = features(n, dtype, layout)
    for epilogue in EPILOGUES:
        for index in maps(n).values():
            for d, k in [(1, 0), (1, 4), (1, 5), (2, 13)]:
                residual = features(C_OUT, dtype, layout, seed=7) if epilogue.get('residual') else None
                kwargs = epilogue_args(epilogue, residual)
                expected = separate_ops(ghost_shift_reference(x, index, k, d), **kwargs)
                out = op.ghost_shift(x, index, k, d, None, *kwargs.values())
                assert torch.equal(out, expected), (epilogue, d, k)
                assert torch.equal(out.signbit(), expected.signbit()), (epilogue, d, k)  # -0.0 where they give it
                assert torch.equal(backend.ghost_shift(x, index, k, d, **kwargs), expected)


@requires_ext
def test_epilogue_residual_in_other_layout():
    x = features(4, torch.float32, 'channels_last')
    residual = torch.randn(N, C_OUT, H, W)  # NCHW residual for a channels_last input
    index = maps(4)['random']
    out = op.ghost_shift(x, index, 2, 1, None, residual, 0.5, False)
    assert torch.equal(out, separate_ops(ghost_shift_reference(x, index, 2, 1), residual, 0.5))
    assert out.is_contiguous(memory_format=torch.channels_last)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
def test_epilogue_backward(layout):
    """Gradients to x, residual and S(W') through the fused epilogue equal those through the separate ops."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for epilogue in EPILOGUES:
            x = features(4, dtype, layout).requires_grad_()
            residual = features(C_OUT, dtype, layout, seed=7).requires_grad_() if epilogue.get('residual') else None
            probs = torch.softmax(torch.randn(9), 0).requires_grad_()
            kwargs = epilogue_args(epilogue, residual)
            grad = features(C_OUT, dtype, layout, seed=5)
            index = default_index(C_OUT, 4)
            results = []
            for fused in (True, False):
                inputs = [t for t in (x, residual, probs) if t is not None]
                out = backend.ghost_shift(x, index, 5, 1, probs, **kwargs) if fused else separate_ops(
                    ghost_shift_reference(x, index, 5, 1, probs), **kwargs)
                results.append((out, torch.autograd.grad(out, inputs, grad)))
            (out, grads), (ref_out, ref_grads) = results
            assert torch.equal(out, ref_out)
            assert torch.equal(grads[0], ref_grads[0]), (dtype, epilogue)  # default map: exact
            if residual is not None:
                assert torch.equal(grads[1], ref_grads[1])
            tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(grads[-1], ref_grads[-1], rtol=tol, atol=tol)


@requires_ext
def test_epilogue_opcheck_and_gradcheck():
    index = maps(3, c_out=7)['random']
    x = features(3, torch.float64, 'nchw', shape=(2, 5, 6)).requires_grad_()
    residual = features(7, torch.float64, 'nchw', shape=(2, 5, 6), seed=2).requires_grad_()
    torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, residual, 0.25, True))
    torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, None, 1.0, True))
    torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, residual, 0.25, True, 0.2))
    torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, None, 1.0, True, 0.01))
    assert torch.autograd.gradcheck(lambda a, r: op.ghost_shift(a, index, 6, 1, None, r, -0.5, False), (x, residual))
    assert torch.autograd.gradcheck(lambda a: op.ghost_shift(a, index, 6, 1, None, None, 1.0, True), (x, ))
    for slope in (0.2, -0.3):  # the leaky mask from the output (slope >= 0) and from the recomputed Y
        assert torch.autograd.gradcheck(lambda a: op.ghost_shift(a, index, 6, 1, None, None, 1.0, True, slope), (x, ))


# PReLU (Compact's activation): one slope per output channel, or one for all; slopes of both signs.
PRELU_EPILOGUES = [dict(), dict(scale=0.5), dict(residual=True), dict(residual=True, scale=-0.3)]


def prelu_slopes(count, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(count, generator=gen, dtype=torch.float64) - 0.4).to(dtype)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_prelu_epilogue_forward_exact(dtype, layout):
    n = 4
    x = features(n, dtype, layout)
    for count in (C_OUT, 1):
        slopes = prelu_slopes(count, dtype)
        for epilogue in PRELU_EPILOGUES:
            for index in maps(n).values():
                for d, k in [(1, 0), (1, 4), (1, 5), (2, 13)]:
                    residual = features(C_OUT, dtype, layout, seed=7) if epilogue.get('residual') else None
                    scale = epilogue.get('scale', 1.0)
                    y = F.prelu(ghost_shift_reference(x, index, k, d), slopes)
                    expected = separate_ops(y, residual, scale)
                    out = op.ghost_shift(x, index, k, d, None, residual, scale, False, 0.0, slopes)
                    assert torch.equal(out, expected), (count, epilogue, d, k)
                    assert torch.equal(out.signbit(), expected.signbit()), (count, epilogue, d, k)
                    assert torch.equal(backend.ghost_shift(x, index, k, d, residual=residual, scale=scale,
                                                           slopes=slopes), expected)


@requires_ext
@pytest.mark.parametrize('layout', LAYOUTS)
def test_prelu_epilogue_backward_exact(layout):
    """Gradients to x, the slopes, the residual and S(W') through the fused PReLU equal those through the ghost op
    followed by ``F.prelu`` (exact; S(W') as the other epilogues, to a tolerance)."""
    memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for count in (C_OUT, 1):
            for epilogue in PRELU_EPILOGUES:
                x = features(4, dtype, layout).requires_grad_()
                slopes = prelu_slopes(count, dtype).requires_grad_()
                residual = features(C_OUT, dtype, layout, seed=7).requires_grad_() if epilogue.get('residual') else None
                scale = epilogue.get('scale', 1.0)
                probs = torch.softmax(torch.randn(9), 0).requires_grad_()
                grad = features(C_OUT, dtype, layout, seed=5)
                index = default_index(C_OUT, 4)
                inputs = [t for t in (x, slopes, residual, probs) if t is not None]
                out = backend.ghost_shift(x, index, 5, 1, probs, residual=residual, scale=scale, slopes=slopes)
                y = ghost_shift_reference(x, index, 5, 1, probs).contiguous(memory_format=memory_format)
                expected = separate_ops(F.prelu(y, slopes), residual, scale)
                grads = torch.autograd.grad(out, inputs, grad)
                ref_grads = torch.autograd.grad(expected, inputs, grad)
                assert torch.equal(out, expected)
                assert torch.equal(grads[0], ref_grads[0]), (dtype, count, epilogue)
                assert torch.equal(grads[1], ref_grads[1]), (dtype, count, epilogue)
                if residual is not None:
                    assert torch.equal(grads[2], ref_grads[2])
                tol = 5e-2 if dtype == torch.bfloat16 else 1e-5
                torch.testing.assert_close(grads[-1], ref_grads[-1], rtol=tol, atol=tol)


@requires_ext
def test_prelu_epilogue_opcheck_and_gradcheck():
    index = maps(3, c_out=7)['random']
    x = features(3, torch.float64, 'nchw', shape=(2, 5, 6)).requires_grad_()
    residual = features(7, torch.float64, 'nchw', shape=(2, 5, 6), seed=2).requires_grad_()
    for count in (7, 1):
        slopes = prelu_slopes(count, torch.float64).requires_grad_()
        torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, None, 1.0, False, 0.0, slopes))
        torch.library.opcheck(op.ghost_shift.default, (x, index, 3, 1, None, residual, 0.25, False, 0.0, slopes))
        assert torch.autograd.gradcheck(
            lambda a, w, r: op.ghost_shift(a, index, 6, 1, None, r, -0.5, False, 0.0, w), (x, slopes, residual))


@requires_ext
def test_prelu_epilogue_bad_slopes():
    x, index = torch.randn(1, 4, 5, 5), default_index(8, 4)
    with pytest.raises(RuntimeError, match='slopes must be a 1-D tensor of 8 values'):
        op.ghost_shift(x, index, 0, 1, None, None, 1.0, False, 0.0, torch.rand(4))
    with pytest.raises(RuntimeError, match='slopes are Double'):
        op.ghost_shift(x, index, 0, 1, None, None, 1.0, False, 0.0, torch.rand(8, dtype=torch.float64))
    with pytest.raises(ValueError, match='slopes must be a 1-D tensor of 8 values'):
        backend.ghost_shift(x, index, 0, 1, slopes=torch.rand(1, 8))


@requires_ext
def test_epilogue_bad_inputs():
    x, index = torch.randn(1, 4, 5, 5), default_index(8, 4)
    with pytest.raises(RuntimeError, match='residual must have the output'):
        op.ghost_shift(x, index, 0, 1, None, torch.randn(1, 4, 5, 5), 1.0, False)
    with pytest.raises(RuntimeError, match='residual is Double'):
        op.ghost_shift(x, index, 0, 1, None, torch.randn(1, 8, 5, 5, dtype=torch.float64), 1.0, False)
    with pytest.raises(ValueError, match='residual must have'):
        backend.ghost_shift(x, index, 0, 1, residual=torch.randn(1, 8, 5, 4))


# ---------------------------------------------------------------------------------------------------------------
# Layers and networks: identical with either backend.


def _run(module, x, monkeypatch, choice):
    monkeypatch.setenv('GHOSTSR_BACKEND', choice)
    module.zero_grad()
    out = module(x)
    out.square().mean().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return out.detach(), grads


@requires_ext
@pytest.mark.parametrize('shift_mode', ['learnable', 'fixed', 'copy'])
def test_ghost_conv_same_with_either_backend(monkeypatch, shift_mode):
    for ratio in RATIOS:
        torch.manual_seed(0)
        layer = GhostConv2d(5, 8, 3, ratio=ratio, shift_mode=shift_mode, offset=(1, -1))
        x = torch.randn(2, 5, 7, 9)
        for train in (False, True):
            layer.train(train)
            torch.manual_seed(1)
            out, grads = _run(layer, x, monkeypatch, 'auto')
            torch.manual_seed(1)
            ref_out, ref_grads = _run(layer, x, monkeypatch, 'reference')
            assert torch.equal(out, ref_out)
            assert grads.keys() == ref_grads.keys()
            for name in grads:
                torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6)


@requires_ext
@pytest.mark.filterwarnings('ignore:GhostSR. this Ghost network is trained without GhostSRModel')
def test_ghost_edsr_same_with_either_backend(monkeypatch):
    torch.manual_seed(0)
    net = GhostEDSR(3, 3, num_feat=16, num_block=2, upscale=2, ghost_ratio=0.5, shift_mode='learnable')
    for layer in net.modules():  # distinct offsets per layer
        if isinstance(layer, GhostConv2d):
            layer.shift_logits.data.normal_()
    x = torch.rand(2, 3, 9, 11)
    net.eval()
    with torch.no_grad():
        monkeypatch.setenv('GHOSTSR_BACKEND', 'auto')
        out = net(x)
        monkeypatch.setenv('GHOSTSR_BACKEND', 'reference')
        assert torch.equal(out, net(x))
    net.train()
    results = []
    for choice in ('auto', 'reference'):
        net.ghost_schedule.iteration.zero_()
        results.append(_run(net, x, monkeypatch, choice))
    (out, grads), (ref_out, ref_grads) = results
    assert torch.equal(out, ref_out)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # channels_last network
        net.eval().to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        monkeypatch.setenv('GHOSTSR_BACKEND', 'auto')
        out = net(xc)
        monkeypatch.setenv('GHOSTSR_BACKEND', 'reference')
        assert torch.equal(out, net(xc))


# ---------------------------------------------------------------------------------------------------------------
# torch.compile / torch.export.


@requires_ext
def test_torch_export():
    index = default_index(8, 4)

    class Layer(torch.nn.Module):

        def forward(self, x):
            return op.ghost_shift(x, index, 3, 1)

    x = torch.randn(1, 4, 6, 7)
    exported = torch.export.export(Layer(), (x, ))
    assert 'ghostsr.ghost_shift' in exported.graph_module.code
    assert torch.equal(exported.module()(x), ghost_shift_reference(x, index, 3, 1))


@requires_ext
def test_torch_export_keeps_the_fused_leaky_relu():
    index = default_index(8, 4)

    class Layer(torch.nn.Module):

        def forward(self, x, residual):
            return backend.ghost_shift(x, index, 3, 1, residual=residual, scale=0.2, relu=True, negative_slope=0.2)

    x, residual = torch.randn(1, 4, 6, 7), torch.randn(1, 8, 6, 7)
    exported = torch.export.export(Layer(), (x, residual))
    assert 'ghostsr.ghost_shift' in exported.graph_module.code
    expected = separate_ops(ghost_shift_reference(x, index, 3, 1), residual, 0.2, True, 0.2)
    assert torch.equal(exported.module()(x, residual), expected)


@requires_ext
@pytest.mark.parametrize('slope', [0.0, 0.2])
@pytest.mark.parametrize('mode', ['decompose', 'op', None])
def test_torch_compile_traces_plain_ops_unless_told(mode, slope, monkeypatch):
    """Under torch.compile the ghost op is traced as the reference's plain ops (Inductor can fuse them), or kept as
    the compiled op with GHOSTSR_COMPILE=op; either way one graph, with values equal to eager."""
    if mode is not None:
        monkeypatch.setenv('GHOSTSR_COMPILE', mode)
    index = maps(4)['random']
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    def fn(x):
        return backend.ghost_shift(x, index, 7, 1, relu=True, negative_slope=slope)

    torch._dynamo.reset()
    x = torch.randn(2, 4, 6, 7)
    assert torch.equal(torch.compile(fn, backend=record, fullgraph=True)(x), fn(x))
    assert len(graphs) == 1
    code = graphs[0].code
    if mode == 'op':
        assert 'ghostsr.ghost_shift' in code
    else:
        assert 'ghostsr' not in code and 'index_select' in code


def test_bad_compile_mode_is_named(monkeypatch):
    monkeypatch.setenv('GHOSTSR_COMPILE', 'fused')
    with pytest.raises(ValueError, match="GHOSTSR_COMPILE must be one of decompose, op, got 'fused'"):
        backend.ghost_shift(torch.ones(1, 4, 3, 3), default_index(8, 4), 4, 1)


@requires_ext
def test_torch_compile_runs():
    """One tiny case (CPU Inductor compiles in ~15 s): fullgraph, forward equal, gradients equal to eager."""
    index = maps(4)['random']

    def fn(x, probs):
        return torch.relu(backend.ghost_shift(x, index, 7, 1, probs)) * 2

    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    probs = torch.softmax(torch.randn(9), 0).requires_grad_()
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(x, probs)
    assert torch.equal(out, fn(x, probs))
    grads = torch.autograd.grad(out.sum(), (x, probs))
    ref = torch.autograd.grad(fn(x, probs).sum(), (x, probs))
    assert torch.equal(grads[0], ref[0])
    torch.testing.assert_close(grads[1], ref[1])


# ---------------------------------------------------------------------------------------------------------------
# CUDA kernels (run where a GPU and a build with GHOSTSR_CUDA exist): the same comparisons against the CPU reference.

requires_cuda = pytest.mark.skipif(NO_EXT or not torch.cuda.is_available() or backend.backend_name('cuda') != 'cuda',
                                   reason='needs a GPU and the CUDA kernels (built with GHOSTSR_CUDA=1)')


@requires_cuda
@pytest.mark.parametrize('shape', [(N, H, W), (2, 6, 16)], ids=['scalar', 'vector'])
@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_cuda_matches_reference(dtype, layout, shape):
    """Odd widths run the scalar kernels, widths and channel counts that are multiples of 8 the vector ones."""
    for ratio in RATIOS:
        n = num_intrinsic_channels(C_OUT, ratio)
        x = features(n, dtype, layout, shape=shape)
        for name, index in maps(n).items():
            for d, k in OFFSETS:
                xc, ic = x.cuda(), index.cuda()
                assert torch.equal(op.ghost_shift(xc, ic, k, d).cpu(), ghost_shift_reference(x, index, k, d))
                grad = features(C_OUT, dtype, layout, seed=k, shape=shape)
                ours = op.ghost_shift_backward(grad.cuda(), ic, k, d, n).cpu()
                ref = reference_grad_x(x, index, k, d, grad)
                if unique_sources(index, n):
                    assert torch.equal(ours, ref), (name, d, k)
                else:
                    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
                    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
                torch.testing.assert_close(op.ghost_shift_offset_grad(grad.cuda(), xc, ic, d).cpu(),
                                           op.ghost_shift_offset_grad(grad, x, index, d), rtol=1e-4, atol=1e-3)
                residual = features(C_OUT, dtype, layout, seed=1, shape=shape)
                fused = op.ghost_shift(xc, ic, k, d, None, residual.cuda(), 0.1, True).cpu()
                assert torch.equal(fused, separate_ops(ghost_shift_reference(x, index, k, d), residual, 0.1, True))
                leaky = op.ghost_shift(xc, ic, k, d, None, residual.cuda(), 0.1, True, 0.2).cpu()
                assert torch.equal(leaky, separate_ops(ghost_shift_reference(x, index, k, d), residual, 0.1, True, 0.2))
                slopes = prelu_slopes(C_OUT, dtype)
                prelu = op.ghost_shift(xc, ic, k, d, None, residual.cuda(), 0.1, False, 0.0, slopes.cuda()).cpu()
                y = F.prelu(ghost_shift_reference(x, index, k, d), slopes)
                assert torch.equal(prelu, separate_ops(y, residual, 0.1))


@requires_cuda
def test_cuda_ghost_edsr_same_with_either_backend(monkeypatch):
    torch.manual_seed(0)
    net = GhostEDSR(3, 3, num_feat=16, num_block=2, upscale=2).cuda().eval()
    x = torch.rand(2, 3, 9, 16, device='cuda')
    with torch.no_grad():
        monkeypatch.setenv('GHOSTSR_BACKEND', 'auto')
        out = net(x)
        monkeypatch.setenv('GHOSTSR_BACKEND', 'reference')
        assert torch.equal(out, net(x))


# ---------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, never a silent wrong result.


def test_bad_inputs_python_wrapper():
    x, index = torch.randn(1, 4, 5, 5), default_index(8, 4)
    with pytest.raises(TypeError, match='floating point'):
        backend.ghost_shift(x.long(), index, 0, 1)
    with pytest.raises(ValueError, match='4-D'):
        backend.ghost_shift(x[0], index, 0, 1)
    with pytest.raises(TypeError, match='int64'):
        backend.ghost_shift(x, index.int(), 0, 1)
    with pytest.raises(TypeError, match='1-D'):
        backend.ghost_shift(x, index.view(2, 4), 0, 1)
    with pytest.raises(ValueError, match='is on meta'):
        backend.ghost_shift(x, index.to('meta'), 0, 1)
    for offset in (-1, 9, 4.0):
        with pytest.raises(ValueError, match='offset index'):
            backend.ghost_shift(x, index, offset, 1)
    with pytest.raises(ValueError, match='maximum offset'):
        backend.ghost_shift(x, index, 0, 0)
    for bad in ([0, 1, 2, 8], [-1, 0, 1, 2]):
        with pytest.raises(ValueError, match='channel map values'):
            backend.ghost_shift(x, torch.tensor(bad), 0, 1)
    with pytest.raises(ValueError, match='probabilities must have shape'):
        backend.ghost_shift(x, index, 0, 1, torch.rand(25, requires_grad=True))


@requires_ext
def test_bad_inputs_cpp_op():
    """The C++ op checks everything itself (it is reachable without the Python wrapper)."""
    x, index = torch.randn(1, 4, 5, 5), default_index(8, 4)
    cases = [
        ((x.long(), index, 0, 1), 'float32, float16, bfloat16 or float64'),
        ((x[0], index, 0, 1), '4-D'),
        ((x, index.int(), 0, 1), '1-D int64'),
        ((x, index, 9, 1), r'offset index must lie in \[0, 8\]'),
        ((x, index, -1, 1), 'offset index'),
        ((x, index, 0, 0), 'maximum offset'),
        ((x, torch.tensor([0, 8]), 0, 1), 'out of range'),
        ((x, torch.tensor([-1, 0]), 0, 1), 'out of range'),
        ((x, index, 0, 1, torch.rand(4)), 'probabilities must have shape'),
        ((x, index.to('meta'), 0, 1), 'channel map is on meta'),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            op.ghost_shift(*args)
    grad = torch.randn(1, 8, 5, 5)
    with pytest.raises(RuntimeError, match='channel map has 7 entries'):
        op.ghost_shift_backward(grad, index[:7], 0, 1, 4)
    with pytest.raises(RuntimeError, match='out of range'):
        op.ghost_shift_backward(grad, index, 0, 1, 3)
    with pytest.raises(RuntimeError, match='does not match'):
        op.ghost_shift_offset_grad(grad[..., :4], x, index, 1)
    with pytest.raises(RuntimeError, match='output gradient is Half'):
        op.ghost_shift_offset_grad(grad.half(), x, index, 1)
    with pytest.raises(RuntimeError, match='out of range'):
        op.ghost_shift_offset_grad(grad, x[:, :3], index, 1)


def test_wrong_map_length_in_layer():
    layer = GhostConv2d(4, 8, 3)
    with pytest.raises(ValueError, match='channel map must hold 8 values'):
        layer.set_index(torch.arange(7))
