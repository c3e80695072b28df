"""Ghostify a checkpoint or an option file's network, cluster its pre-trained weights into the Ghost network (§3.2) and
write the Ghost checkpoint, its report and the BasicSR options that build it: the library behind ``ghostsr
ghostify``."""
import copy

import yaml

from ghostsr_plugin.compress.ghostifier import GHOST_ARGS, format_report, ghostify
from ghostsr_plugin.utils.atomic import atomic_torch_save, atomic_write, atomic_write_json
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['plain_network', 'ghostify_checkpoint']


def plain_network(model=None, opt=None, arch=None, arch_args='{}', network_key='network_g', pretrained=None,
                  param_key='params', trace_size=16):
    """(plain net with its weights, its BasicSR options, trace size, source name) of a checkpoint spandrel
    identifies (``model``), an option file's network (``opt``) or a registered ``arch``, with ``pretrained``."""
    from ghostsr_plugin.archs.build import build_network_spec, load_weights, network_spec
    if model:
        from ghostsr_plugin.compress.spandrel_io import load_model, network_options, size_for_trace
        descriptor = load_model(model)
        opts = network_options(descriptor)
        return descriptor.model.float(), opts, size_for_trace(descriptor, trace_size), descriptor.architecture.id
    opts, source = network_spec(opt, network_key, arch, arch_args)
    if opts['type'] == 'Ghost':
        raise UserInputError(f'{opt}: network {network_key} is already type Ghost; give the plain network')
    net = build_network_spec(copy.deepcopy(opts), source)
    if pretrained:
        load_weights(net, pretrained, param_key)
    return net, opts, trace_size, opts['type']


def ghostify_checkpoint(out, model=None, opt=None, arch=None, arch_args='{}', network_key='network_g',
                        pretrained=None, param_key='params', opt_out=None, include=None, exclude=None, trace_size=16,
                        reparameterize=True, cluster=True, seed=0, n_init=10, init_offset=None, progress=True,
                        log=print, **ghost_args):
    """Ghostify the plain network of ``model`` / ``opt`` / ``arch`` (:func:`plain_network`) with ``ghost_args``
    (:data:`GHOST_ARGS`; defaults for the missing ones), cluster its weights into it unless ``cluster`` is false or
    there are none, and write ``out`` (``{'params': state_dict}``), ``<out>.json`` (which layers were ghosted and
    why, the clustering report) and, with ``opt_out``, the ``network_g`` options (``type: Ghost``) that build it.
    Returns the report."""
    from ghostsr_plugin.compress.clustering import cluster_init, report_summary
    from ghostsr_plugin.compress.reparam import merged_state_dict
    if model and pretrained:
        raise UserInputError('--pretrained goes with -opt / --arch; --model is the checkpoint itself')
    unknown = set(ghost_args) - set(GHOST_ARGS)
    if unknown:
        raise UserInputError(f'unknown ghost arguments {sorted(unknown)}; allowed: {", ".join(GHOST_ARGS)}')
    net, plain_opts, trace_size, source = plain_network(model, opt, arch, arch_args, network_key, pretrained,
                                                        param_key, trace_size)
    ghost_args = {k: list(ghost_args.get(k, v)) if isinstance(v, tuple) else ghost_args.get(k, v)
                  for k, v in GHOST_ARGS.items()}
    ghost_opts = {'type': 'Ghost', 'network': plain_opts, **ghost_args}
    for key, value in (('include', include), ('exclude', exclude)):
        if value:
            ghost_opts[key] = list(value)
    if trace_size != 16:
        ghost_opts['trace_size'] = trace_size
    if not reparameterize:
        ghost_opts['reparameterize'] = False
    # the checkpoint as the Ghost network needs it: its re-parameterised blocks merged as ghostify merges them
    plain_state = merged_state_dict(net) if reparameterize else net.state_dict()
    ghost = ghostify(net, **ghost_args, include=include, exclude=exclude, trace_size=trace_size,
                     reparameterize=reparameterize)
    log(format_report(ghost.ghostify_report))
    report = {'source': model or opt or arch, 'architecture': source, 'network_g': ghost_opts,
              'ghostify': ghost.ghostify_report}
    if cluster and (model or pretrained):
        clustered = cluster_init(ghost, plain_state, seed=seed, n_init=n_init, init_offset=init_offset,
                                 progress=progress)
        log(report_summary(clustered))
        report['cluster'] = clustered
    atomic_torch_save({'params': ghost.state_dict()}, out)
    atomic_write_json(report, out + '.json')
    snippet = yaml.safe_dump({'network_g': ghost_opts}, sort_keys=False, default_flow_style=None)
    if opt_out:
        atomic_write(opt_out, lambda file: file.write(snippet), mode='w')
    log(f'# BasicSR options of the Ghost network (load {out} with param_key params):\n{snippet.rstrip()}')
    log(f'wrote {out}, {out}.json' + (f' and {opt_out}' if opt_out else ''))
    return report
