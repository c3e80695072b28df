"""Deployable forms of a (Ghost) network: ONNX with the ghost move in standard ONNX ops, and a ``torch.export``
program that keeps the compiled ghost op.

Both start from :func:`frozen_copy`: a deep copy in eval mode whose offsets are fixed at argmax W' (the offsets
``ghostsr_plugin.ops.ghost_offsets`` reports, Eq. 5 without noise), with the shift logits W' and the Gumbel
schedule removed, so neither form holds a Gumbel parameter, a noise source or a schedule buffer.

ONNX (:func:`export_onnx`): every ``GhostConv2d`` becomes an :class:`OnnxGhostConv2d` made of plain PyTorch ops
that the ONNX exporter (``torch.onnx.export(..., dynamo=True)``) turns into standard operators:

    intrinsic I = Conv(x) (+ Relu, * scale: both commute with the move, so they run on the n intrinsic channels;
                  a fused PReLU, one slope per output channel, runs on Y instead)
    sources S   = I, or Gather(I, ghost sources) when the ghosts are not made from I in order
    ghosts  G   = move(S) by the layer's fixed (dy, dx), zero fill (Eq. 1 with the one-hot W of Eq. 2)
    Y           = Concat(I, G), then Gather by the channel map when it is not [I, G]; + residual

``move`` has two exact forms (``shift_form``): ``'conv'`` (default), a depth-wise Conv whose (2d+1)x(2d+1)
kernels are the one-hot W itself — it stays in onnxruntime's blocked (NCHWc) convolution layout, which the
measured latency favours — and ``'slice'``, zero Pad + Slice, the shape of the reference
:func:`ghostsr_plugin.ops.shift.shift2d`. Height, width and batch are dynamic.

torch.export (:func:`export_program`): the frozen copy as it is, so the graph calls ``torch.ops.ghostsr.ghost_shift``
(its fake functions in :mod:`ghostsr_plugin.ops.backend` make it exportable); loading it needs the plugin
imported (``import ghostsr_plugin``), which registers the op.
"""
import contextlib
import copy
import io
import json
import logging
import os
import statistics
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ghostsr_plugin.measure.complexity import forward_kwargs
from ghostsr_plugin.ops.ghost_conv import GhostConv2d, ghost_offsets
from ghostsr_plugin.utils.atomic import atomic_write
from ghostsr_plugin.utils.errors import UserInputError

__all__ = [
    'SHIFT_FORMS', 'DEFAULT_OPSET', 'INPUT_NAME', 'OUTPUT_NAME', 'OnnxGhostConv2d', 'frozen_copy', 'output_scale', 'onnx_form',
    'export_onnx', 'export_program', 'load_program', 'program_ghost_ops', 'onnx_session', 'run_onnx',
    'read_images', 'check_outputs', 'bench_onnx', 'program_bytes', 'FORMATS', 'output_stem', 'check_writable', 'export_network', 'bench_onnx_table'
]

SHIFT_FORMS = ('conv', 'slice')
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = 'lq', 'sr'


class _NoSchedule(nn.Module):
    """Stands in for a Ghost network's ``GhostSchedule`` once the offsets are fixed: plans nothing."""

    def plan(self, net, training):
        pass


class _FixedScale(nn.Module):
    """A multi-scale network (``forward(x, scale)``) with its scale fixed, so the exported graph takes only ``x``."""

    def __init__(self, net, scale):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        return self.net(x, scale=self.scale)


def _layer_shifts(net):
    """{id(layer): (dy, dx)} of every ghost layer at its eval offset, from :func:`ghost_offsets`."""
    return {id(net.get_submodule(name)): shift for name, shift in ghost_offsets(net).items()}


def frozen_copy(net, scale=None):
    """Deep copy of ``net`` in eval mode with every ghost layer's offset fixed at argmax W' (its shift logits
    removed) and the Gumbel schedule replaced by a no-op; a multi-scale network gets ``scale`` fixed (None: its
    ``upscale``). The copy computes exactly what ``net.eval()`` computes."""
    frozen = copy.deepcopy(net).eval()
    for layer in frozen.modules():
        if isinstance(layer, GhostConv2d):
            layer.freeze_offset()
            layer.shift_logits = None  # the offset is fixed_offset now; no Gumbel parameter is left
    if hasattr(frozen, 'ghost_schedule'):
        frozen.ghost_schedule = _NoSchedule()
    kwargs = forward_kwargs(frozen, scale if scale is not None else getattr(frozen, 'upscale', None))
    if kwargs:
        _check_scale(frozen, kwargs['scale'])
        frozen = _FixedScale(frozen, kwargs['scale'])
    frozen.requires_grad_(False)
    if scale is not None and scale != output_scale(frozen):
        raise UserInputError(f'--scale {scale}: {type(net).__name__} is single-scale with scale '
                             f'{output_scale(frozen)}; allowed: {output_scale(frozen)} (or leave --scale out)')
    return frozen


def output_scale(net):
    """Upscaling factor of ``net(x)`` (one forward of an 8x8 input)."""
    x = _sample_input(net, 8)[:1]
    with torch.inference_mode():
        return net(x).shape[-1] // x.shape[-1]


def _check_scale(net, scale):
    heads = [s for s in (2, 3, 4) if hasattr(getattr(net, 'upsample', None), f'up{s}')]
    if heads and scale not in heads:
        raise UserInputError(f'--scale {scale}: {type(net).__name__} has upsampling heads for scale '
                             f'{", ".join(map(str, heads))}; allowed: one of those')


class OnnxGhostConv2d(nn.Module):
    """A ``GhostConv2d`` with a fixed offset in plain ops (see the module docstring); same value, same call
    (``forward(x, residual=None, scale=1.0, relu=None)``) and same state-dict names (``weight``, ``bias``,
    ``ghost_index``) as the layer it replaces."""

    def __init__(self, layer, shift, shift_form='conv'):
        super().__init__()
        if shift_form not in SHIFT_FORMS:
            raise UserInputError(f'shift form {shift_form!r} is unknown; allowed: {", ".join(SHIFT_FORMS)}')
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        self.dy, self.dx = shift
        self.d, self.fused_relu, self.shift_form = layer.d, layer.fused_relu, shift_form
        self.fused_negative_slope = layer.fused_negative_slope
        self.__dict__['fused_prelu'] = layer.fused_prelu  # the network's FusedPReLU, not a submodule (as the layer)
        n = layer.num_intrinsic
        index = layer.ghost_index.detach().clone()
        self.register_buffer('ghost_index', index)
        ghost_positions = torch.nonzero(index >= n).flatten()
        sources = index[ghost_positions] - n
        # Map over Concat(I, G): intrinsic channels as in the layer's map, ghost k of G at n + k.
        order = index.clone()
        order[ghost_positions] = n + torch.arange(len(ghost_positions))
        self.register_buffer('sources', sources, persistent=False)
        self.register_buffer('order', order, persistent=False)
        self.sources_all = torch.equal(sources, torch.arange(n))
        self.order_identity = torch.equal(order, torch.arange(len(order)))
        if shift_form == 'conv':  # the one-hot W of Eq. 2 as a depth-wise kernel, one per ghost channel
            size = 2 * self.d + 1
            kernel = torch.zeros(len(sources), 1, size, size, dtype=self.weight.dtype)
            kernel[:, 0, self.dy + self.d, self.dx + self.d] = 1
            self.register_buffer('move_kernel', kernel, persistent=False)

    def move(self, x):
        """``G[y, x] = S[y + dy, x + dx]``, zero outside: the value of :func:`~ghostsr_plugin.ops.shift.shift2d`."""
        if self.shift_form == 'conv':
            return F.conv2d(x, self.move_kernel, None, 1, self.d, 1, x.shape[1])
        dy, dx = self.dy, self.dx
        top, bottom, left, right = max(-dy, 0), max(dy, 0), max(-dx, 0), max(dx, 0)
        padded = F.pad(x, (left, right, top, bottom))
        return padded[..., bottom:padded.shape[-2] - top, right:padded.shape[-1] - left]

    def forward(self, x, residual=None, scale=1.0, relu=None):
        intrinsic = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.fused_prelu is not None and relu is None:  # one slope per output channel: after the move
            out = F.prelu(self.assemble(intrinsic), self.fused_prelu.weight)
            out = out * scale if scale != 1.0 else out
            return out if residual is None else residual + out
        if self.fused_relu if relu is None else relu:
            slope = self.fused_negative_slope
            intrinsic = F.leaky_relu(intrinsic, slope) if slope else torch.relu(intrinsic)
        if scale != 1.0:
            intrinsic = intrinsic * scale
        out = self.assemble(intrinsic)
        return out if residual is None else residual + out

    def assemble(self, intrinsic):
        """The layer's output channels from its intrinsic ones: ``[I, G]`` in the layer's channel map."""
        sources = intrinsic if self.sources_all else intrinsic.index_select(1, self.sources)
        out = torch.cat([intrinsic, self.move(sources)], 1)
        return out if self.order_identity else out.index_select(1, self.order)


def onnx_form(net, scale=None, shift_form='conv'):
    """:func:`frozen_copy` with every ghost layer replaced by an :class:`OnnxGhostConv2d` (shared layers stay
    shared)."""
    frozen = frozen_copy(net, scale)
    shifts = _layer_shifts(frozen)
    replaced = {}
    for parent in list(frozen.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GhostConv2d):
                if id(child) not in replaced:
                    replaced[id(child)] = OnnxGhostConv2d(child, shifts[id(child)], shift_form)
                setattr(parent, name, replaced[id(child)])
    return frozen.eval()


def _sample_input(net, size=32):
    in_channels = next(m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d))
    return torch.rand(2, in_channels, size, size)


def _dynamic_shapes():
    dims = torch.export.Dim('batch', min=1), torch.export.Dim('height', min=1), torch.export.Dim('width', min=1)
    return {'x': {0: dims[0], 2: dims[1], 3: dims[2]}}


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the ONNX exporter's progress lines, warnings and logged notes (e.g. on converting to opset 17);
    what matters is checked after it (opset produced, onnx.checker)."""
    loggers = [logging.getLogger(name) for name in ('torch.onnx', 'onnxscript')]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_onnx(net, path=None, scale=None, opset=DEFAULT_OPSET, shift_form='conv', metadata=None):
    """ONNX model (``onnx.ModelProto``) of ``net`` with offsets fixed, input ``lq`` [N, C, H, W] and output
    ``sr``, batch/height/width dynamic; checked with ``onnx.checker``; written atomically to ``path`` if given."""
    import onnx
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise UserInputError(f'--opset {opset}: allowed: an ONNX opset >= 17')
    module = onnx_form(net, scale, shift_form)
    with _quiet_exporter():
        program = torch.onnx.export(
            module, (_sample_input(module), ),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=_dynamic_shapes(),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False)
    model = program.model_proto
    produced = next(entry.version for entry in model.opset_import if entry.domain in ('', 'ai.onnx'))
    if produced != opset:
        raise UserInputError(f'--opset {opset}: the exporter produced opset {produced} and could not convert it '
                             f'(shift form {shift_form!r}); allowed: --opset {produced} or higher'
                             + (", or --shift_form conv" if shift_form != 'conv' else ''))
    props = {'ghostsr.offsets': json.dumps({k: list(v) for k, v in ghost_offsets(net).items()}),
             'ghostsr.shift_form': shift_form, **(metadata or {})}
    onnx.helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        data = model.SerializeToString()
        atomic_write(path, lambda file: file.write(data))
    return model


def export_program(net, path=None, scale=None):
    """``torch.export`` program of ``net`` with offsets fixed (batch/height/width dynamic) that calls the compiled
    ghost op; saved atomically with ``torch.export.save`` to ``path`` if given."""
    module = frozen_copy(net, scale)
    program = torch.export.export(module, (_sample_input(module), ), dynamic_shapes=_dynamic_shapes())
    if path is not None:
        atomic_write(path, lambda file: torch.export.save(program, file))
    return program


def load_program(path):
    """``torch.export.load`` of a saved program, after importing the plugin (which registers the ghost op)."""
    import ghostsr_plugin  # noqa: F401
    return torch.export.load(path)


def program_ghost_ops(program):
    """Number of ``ghostsr::*`` op calls in an exported program's graph."""
    return sum(str(node.target).startswith('ghostsr.') for node in program.graph.nodes)


def onnx_session(model, threads=2):
    """onnxruntime CPU session of a model (``ModelProto``, bytes or path) with ``threads`` intra-op threads."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if hasattr(model, 'SerializeToString'):
        model = model.SerializeToString()
    return ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def run_onnx(session, x):
    """Output of an onnxruntime session for a tensor ``x`` (as a tensor)."""
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().numpy()})[0])


def read_images(folder):
    """[(name, [1, 3, H, W] float tensor in [0, 1] RGB)] of the images of a folder, sorted by name."""
    from basicsr.utils import img2tensor
    from ghostsr_plugin.utils.images import IMAGE_EXTENSIONS, read_image
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise UserInputError(f'{folder}: no images (allowed: {", ".join(IMAGE_EXTENSIONS)})')
    images = []
    for name in names:
        img = read_image(os.path.join(folder, name), bgr8=True)
        images.append((name, img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None]))
    return images


def check_outputs(reference, candidates, images):
    """Largest absolute difference per image between ``reference(x)`` and each candidate(x).

    Args:
        reference (callable): tensor -> tensor (the PyTorch network).
        candidates (dict): name -> callable (e.g. an onnxruntime session run, a loaded program).
        images (list): ``[(name, tensor)]`` as :func:`read_images` gives.

    Returns:
        dict: candidate name -> {image name: max |difference|}.
    """
    result = {name: {} for name in candidates}
    with torch.inference_mode():
        for image_name, x in images:
            expected = reference(x)
            for name, run in candidates.items():
                result[name][image_name] = float((run(x) - expected).abs().max())
    return result


def bench_onnx(size=128, threads=2, reps=12, warmup=2, num_feat=64, num_block=16, shift_forms=SHIFT_FORMS,
               progress=None):
    """onnxruntime CPU latency of GhostEDSR against EDSR (x2, ``num_feat``/``num_block``, 1x3x``size``²), next to
    eager PyTorch, all timed interleaved in one run with ``threads`` threads.

    Returns:
        dict: ``times`` (name -> list of ms; names ``edsr_eager``, ``ghost_eager``, ``edsr_onnx``,
        ``ghost_onnx_<form>``) and ``ratios`` (name -> (ratio of medians, median of paired ratios)).
    """
    from ghostsr_plugin.measure.speed import Timer, build_pair, interleaved, ratio_stats
    torch.set_num_threads(threads)
    edsr, ghost = (net.eval() for net in build_pair(torch.device('cpu'), num_feat, num_block, 1.0))
    x = torch.rand(1, 3, size, size)
    x_np = x.numpy()

    def eager(net):
        def run():
            with torch.inference_mode():
                net(x)
        return run

    def session(model):
        sess = onnx_session(model, threads)
        return lambda: sess.run([OUTPUT_NAME], {INPUT_NAME: x_np})

    fns = {'edsr_eager': eager(edsr), 'ghost_eager': eager(ghost), 'edsr_onnx': session(export_onnx(edsr))}
    for form in shift_forms:
        fns[f'ghost_onnx_{form}'] = session(export_onnx(ghost, shift_form=form))
    times = interleaved(Timer(torch.device('cpu')), fns, reps, warmup, progress)
    ratios = {'eager': ratio_stats(times, 'ghost_eager', 'edsr_eager')}
    ratios.update({f'onnx_{form}': ratio_stats(times, f'ghost_onnx_{form}', 'edsr_onnx') for form in shift_forms})
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {'times': times, 'medians': medians, 'ratios': ratios}


def program_bytes(program):
    """A program saved to bytes (``torch.export.save``), e.g. to check it by reloading before writing."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- the export command
FORMATS = ('onnx', 'pt2', 'both')


def output_stem(out, net, scale):
    """File stem of the outputs; an existing folder (or one ending in '/') gets ``<arch>_x<scale>``."""
    if out.endswith(('/', os.sep)) or os.path.isdir(out):
        return os.path.join(out, f'{type(net).__name__}_x{scale}')
    root, ext = os.path.splitext(out)
    return root if ext in ('.onnx', '.pt2') else out


def check_writable(folder):
    """Create ``folder`` if needed and prove a file can be written there; else one clear error."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f'--out: cannot write to the folder {folder} ({err.strerror or err}); allowed: a '
                              'writable folder') from err


def _max_diff(results):
    """(largest difference, image) over a check result {image: difference}."""
    image = max(results, key=results.get)
    return results[image], image


def export_network(opt, ckpt, out, fmt='both', scale_arg=None, opset=None, shift_form='conv', check=None, atol=1e-4,
                   param_key='params', network_key='network_g', log=print):
    """The ``export`` command: the network of option file ``opt`` with ``ckpt``, offsets fixed at argmax W', written
    as ``<stem>.onnx`` and / or ``<stem>.pt2`` (``fmt``: onnx, pt2, both) after each form was checked against the
    PyTorch network on a random odd-sized input and every image of the folder ``check`` (within ``atol``); a form
    that does not pass is not written (:class:`RunFailedError`). ``out`` is a file stem or an existing folder."""
    from ghostsr_plugin.archs.build import load_network
    from ghostsr_plugin.utils.errors import RunFailedError

    if opset is not None and opset < 17:
        raise UserInputError(f'--opset {opset}: allowed: an ONNX opset >= 17')
    if check is not None:
        images = read_images(check)
    net = load_network(opt, ckpt, param_key, network_key)
    frozen = frozen_copy(net, scale_arg)  # validates --scale; the reference the forms are checked against
    scale = output_scale(frozen)
    stem = output_stem(out, net, scale)
    check_writable(os.path.dirname(os.path.abspath(stem)))

    in_channels = next(m.in_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    if check is not None and in_channels != 3:
        raise UserInputError(f'--check: {type(net).__name__} takes {in_channels}-channel input; --check reads RGB '
                             'images, allowed only for 3-channel networks')
    probe = [('random 1x{}x23x37'.format(in_channels), torch.rand(1, in_channels, 23, 37))]
    inputs = probe + (images if check is not None else [])
    formats = ('onnx', 'pt2') if fmt == 'both' else (fmt, )
    offsets = ghost_offsets(net)
    log(f'{type(net).__name__} from {ckpt}: {len(offsets)} ghost layers, offsets (dy,dx) fixed at argmax '
          f'W\': ' + (' '.join(f'{k}={v[0]:+d},{v[1]:+d}' for k, v in offsets.items()) or 'none'))

    for form in formats:
        if form == 'onnx':
            model = export_onnx(net, None, scale_arg, opset or DEFAULT_OPSET, shift_form,
                                       metadata={'ghostsr.arch': type(net).__name__, 'ghostsr.scale': scale})
            session = onnx_session(model)
            result = check_outputs(frozen, {'onnx': lambda x: run_onnx(session, x)}, inputs)['onnx']
            data, path, atol = model.SerializeToString(), f'{stem}.onnx', atol
            note = f'; opset {next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))}'
        else:
            program = export_program(net, None, scale_arg)
            data = program_bytes(program)
            reloaded = torch.export.load(io.BytesIO(data)).module()
            result = check_outputs(frozen, {'pt2': reloaded}, inputs)['pt2']
            path, atol = f'{stem}.pt2', atol
            note = f'; calls the compiled ghost op {program_ghost_ops(program)} times'
        worst, image = _max_diff(result)
        if not worst <= atol:
            raise RunFailedError(f'the {form} output differs from PyTorch by {worst:.3g} on {image} (allowed: <= '
                                 f'{atol:g}); {path} not written')
        atomic_write(path, lambda file, data=data: file.write(data))
        log(f'wrote {path} ({len(data) / 2**20:.2f} MiB); max |{form} - PyTorch| over {len(result)} inputs: '
              f'{worst:.3g} ({image}){note}')
    return stem


def bench_onnx_table(size=128, threads=2, reps=12, num_feat=64, num_block=16, log=print):
    """``export --bench``: :func:`bench_onnx` with a progress bar, its table logged; returns its result."""
    from tqdm import tqdm

    from ghostsr_plugin.measure.speed import device_name

    for name, value in (('size', size), ('threads', threads), ('reps', reps), ('num_feat', num_feat),
                        ('num_block', num_block)):
        if value < 1:
            raise UserInputError(f'--{name} {value}: allowed: a positive integer')
    warmup = 2
    with tqdm(total=(warmup + reps) * (3 + len(SHIFT_FORMS)), desc='bench', leave=False) as bar:
        result = bench_onnx(size, threads, reps, warmup, num_feat, num_block,
                            progress=bar)
    torch.set_num_threads(threads)
    med = result['medians']
    log(f'GhostEDSR vs EDSR x2 (num_feat {num_feat}, num_block {num_block}), 1x3x{size}x{size}'
          f', fp32, {threads} threads, {reps} interleaved repetitions; {device_name(torch.device("cpu"))}')
    log(f'{"runtime":<34} {"EDSR ms":>9} {"Ghost ms":>9} {"ratio":>6} {"paired":>7} {"best":>6}')
    rows = [('PyTorch eager', 'edsr_eager', 'ghost_eager', 'eager')]
    rows += [(f'onnxruntime, move as {form}', 'edsr_onnx', f'ghost_onnx_{form}', f'onnx_{form}') for form in SHIFT_FORMS]
    for label, edsr, ghost, key in rows:
        ratio, paired = result['ratios'][key]
        best = min(result['times'][ghost]) / min(result['times'][edsr])
        log(f'{label:<34} {med[edsr]:9.2f} {med[ghost]:9.2f} {ratio:6.3f} {paired:7.3f} {best:6.3f}')
    eager, onnx = result['ratios']['eager'][0], result['ratios']['onnx_conv'][0]
    log(f'target (ratios of medians): onnxruntime <= eager + 0.05 = {eager + 0.05:.3f}: '
          f'{"met" if onnx <= eager + 0.05 else "NOT met"} ({onnx:.3f}, default form conv); best: the ratio of '
          'the fastest runs (on a shared machine, where load only adds time, the steadiest)')
    return result
