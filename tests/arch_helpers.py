"""Helpers shared by the architecture tests: parameter-count formulas and the plain weights that make a plain twin
compute what a Ghost net computes in copy mode."""
import warnings

import torch

from ghostsr_plugin.ops import GhostConv2d, ghost_layers

GHOST_EXTRA = ('shift_logits', 'ghost_index', 'ghost_schedule.iteration')  # state-dict names only Ghost nets have


def conv_params(cin, cout, k=3, groups=1):
    return cout * cin // groups * k * k + cout


def ghost_params(cin, cout, k=3, groups=1, learnable=True):
    """Intrinsic filters (half the outputs at λ=0.5) plus the 9 logits W' of a learnable layer (d=1)."""
    return conv_params(cin, cout // 2, k, groups) + (9 if learnable else 0)


def num_params(net):
    return sum(p.numel() for p in net.parameters())


def dense(weight, groups):
    """A grouped conv weight [out, in/g, k, k] as the equivalent dense weight [out, in, k, k]."""
    out_ch, in_per_group = weight.shape[:2]
    full = weight.new_zeros(out_ch, in_per_group * groups, *weight.shape[2:])
    out_per_group = out_ch // groups
    for o in range(out_ch):
        g = o // out_per_group
        full[o, g * in_per_group:(g + 1) * in_per_group] = weight[o]
    return full


def plain_state_from_ghost(ghost_net, plain_net):
    """Weights that make ``plain_net`` compute what ``ghost_net`` computes in copy mode (ghost = unshifted copy).

    ``plain_net`` may use dense convs where ``ghost_net`` has group convs (a ghost group conv mixes groups through
    its channel map, which only a dense conv can hold)."""
    ghost_state, modules, state = ghost_net.state_dict(), dict(ghost_net.named_modules()), {}
    for key, target in plain_net.state_dict().items():
        module_name, _, kind = key.rpartition('.')
        module, value = modules[module_name], ghost_state[key]
        if kind == 'weight' and value.dim() == 4 and value.shape[1] != target.shape[1]:
            value = dense(value, module.groups)
        if isinstance(module, GhostConv2d):
            value = value[module.ghost_index % module.num_intrinsic]
        assert value.shape == target.shape, key
        state[key] = value
    return state


def assert_copy_equals_plain(ghost_net, plain_net, x):
    """Copy mode is the plain network with duplicated filters: loaded with :func:`plain_state_from_ghost`, the plain
    twin's eval output equals the Ghost net's."""
    plain_net.load_state_dict(plain_state_from_ghost(ghost_net, plain_net))
    with torch.no_grad():
        torch.testing.assert_close(ghost_net.eval()(x), plain_net.eval()(x), rtol=1e-5, atol=1e-5)


def assert_learnable_trains(net, x, *args):
    """A training step reaches every layer's shift logits W' (Eq. 4's straight-through gradient), and eval (argmax
    W', no noise) is deterministic."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # trained without GhostSRModel
        net.train()(x, *args).mean().backward()
    assert all(m.shift_logits.grad is not None for m in ghost_layers(net))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))
