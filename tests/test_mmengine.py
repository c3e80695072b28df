"""MMEngine integration (ghostsr_plugin.integrations.mmengine): ``import ghostsr_plugin`` does not import mmengine
and a Python config loads the integration through custom_imports and builds ``type='GhostEDSR'``; every arch the
plugin registers into BasicSR is in the ``ghostsr_plugin`` model registry (new ones too); GhostScheduleHook gives, at
every iteration, the same τ, noise scale, epoch and drawn offsets as GhostSRModel; a tiny Runner loop built from
options/mmengine_GhostEDSR_x2.py trains a Ghost network on generated data."""
import copy
import os
import subprocess
import sys

import pytest
import torch

import ghostsr_plugin  # noqa: F401
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.integrations import mmengine as gm
from ghostsr_plugin.ops.ghost_conv import ghost_layers
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'options', 'mmengine_GhostEDSR_x2.py')
TINY_EDSR = dict(type='GhostEDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=2)


def test_config_loads_the_integration_on_demand(tmp_path):
    """In a fresh interpreter: the plugin alone leaves mmengine unimported; custom_imports in a Python config
    imports the integration, and mmengine's root MODELS builds type='GhostEDSR' under the config's scope."""
    config = tmp_path / 'ghost_edsr.py'
    config.write_text("custom_imports = dict(imports=['ghostsr_plugin.integrations.mmengine'], "
                      "allow_failed_imports=False)\ndefault_scope = 'ghostsr_plugin'\n"
                      f'model = dict({", ".join(f"{k}={v!r}" for k, v in TINY_EDSR.items())})\n')
    script = f"""
import sys
import ghostsr_plugin
assert 'mmengine' not in sys.modules, 'import ghostsr_plugin imported mmengine'
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
assert 'ghostsr_plugin.integrations.mmengine' not in sys.modules
cfg = Config.fromfile({str(config)!r})
assert 'ghostsr_plugin.integrations.mmengine' in sys.modules
init_default_scope(cfg.default_scope)
print(type(MODELS.build(cfg.model)).__name__)
example = Config.fromfile({EXAMPLE!r})
example.model.network.update(num_feat=8, num_block=1)
model = MODELS.build(example.model)
print(type(model).__name__, type(model.network).__name__)
"""
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if ' - mmengine - ' not in line]
    assert lines == ['GhostEDSR', 'GhostSRMMModel GhostEDSR']


TINY_ARGS = {
    'GhostEDSR': dict(TINY_EDSR),
    'GhostRDN': dict(num_feat=8, num_block=1, num_layer=1, num_grow_ch=4, upscale=2),
    'RDN': dict(num_feat=8, num_block=1, num_layer=1, num_grow_ch=4, upscale=2),
    'CARN': dict(num_feat=8, upscale=2),
    'GhostCARN': dict(num_feat=8, upscale=2),
    'CARN_M': dict(num_feat=8, upscale=2),
    'GhostCARN_M': dict(num_feat=8, upscale=2),
    'Ghost': dict(network=dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=2)),
}


def test_every_plugin_arch_is_in_the_registry_and_builds():
    plugin = {name for name in ARCH_REGISTRY.keys() if ARCH_REGISTRY.get(name).__module__.startswith('ghostsr_plugin.')}
    assert {'RDN', 'CARN', 'CARN_M', 'GhostEDSR', 'GhostRDN', 'GhostCARN', 'GhostCARN_M'} <= plugin
    assert plugin | {'GhostSRMMModel'} == set(gm.MODELS.module_dict)
    assert all(gm.MODELS.get(name) is ARCH_REGISTRY.get(name) for name in plugin)
    assert gm.MODELS.scope == 'ghostsr_plugin' and gm.MODELS.parent.scope == 'mmengine'
    for name, kwargs in TINY_ARGS.items():
        net = gm.MODELS.build(dict(kwargs, type=name)).eval()
        assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12), name
    from mmengine.registry import MODELS
    assert type(MODELS.build(dict(TINY_EDSR, type='ghostsr_plugin.GhostEDSR'))).__name__ == 'GhostEDSR'


def test_scope_module_is_where_mmengine_looks():
    """mmengine imports ``<scope>.registry`` when it switches scope; it exists and holds the same registries (before:
    the scope was ``ghostsr`` and every switch logged "Failed to import `ghostsr.registry`")."""
    import importlib
    module = importlib.import_module(f'{gm.SCOPE}.registry')
    assert module.MODELS is gm.MODELS and module.HOOKS is gm.HOOKS and module.DATASETS is gm.DATASETS


def test_an_arch_registered_later_appears():
    class LaterArch(torch.nn.Module):
        pass

    LaterArch.__module__ = 'ghostsr_plugin.archs.later_arch'
    ARCH_REGISTRY.register(LaterArch)
    try:
        assert gm.register_archs() == ['LaterArch']
        assert gm.MODELS.get('LaterArch') is LaterArch
    finally:
        ARCH_REGISTRY._obj_map.pop('LaterArch')
        gm.MODELS._module_dict.pop('LaterArch', None)


class _Record(Hook):
    """What the schedule and the ghost layers used in each training step."""
    priority = 'LOWEST'

    def __init__(self):
        self.steps = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        net = runner.model.network
        self.steps.append(_snapshot(net))


def _snapshot(net):
    state = net.ghost_schedule.state()
    return (state.iteration, state.epoch, state.tau, state.noise_scale, [layer._plan[0] for layer in ghost_layers(net)])


def _runner(model, tmp_path, max_iters, hooks, lr=0.0, num_images=6):
    return Runner(
        model=model,
        work_dir=str(tmp_path / 'work_dir'),
        train_dataloader=dict(batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate'),
                              dataset=gm.SyntheticSRDataset(num_images=num_images, size=16, scale=2)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=lr)),
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10_000, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='ghostsr_plugin',
        randomness=dict(seed=0))


def test_hook_reproduces_ghostsr_model_schedule(tiny_data, tmp_path):
    """GhostSRModel steps 1..7 (BasicSR's current_iter) against 7 MMEngine Runner iterations with the hook, same
    initial network, W' held fixed (lr 0) so that the offsets differ only through the schedule: the same iteration,
    epoch (iters_per_epoch derived from 6 images / batch 2 on both sides), τ, noise scale and drawn offsets."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model
    from conftest import train_options
    opt = train_options('mm', dict(TINY_EDSR, num_block=2, gumbel_a=0.5, gumbel_tau=0.7), tiny_data, total_iter=7)
    opt['train']['optim_g']['lr'] = 0.
    opt['train']['scheduler']['eta_min'] = 0.
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path))
    model = build_model(opt)
    assert model.iters_per_epoch == 3
    start = copy.deepcopy(model.net_g)
    loader = build_dataloader(build_dataset(dict(opt['datasets']['train'], phase='train', scale=2)),
                              dict(opt['datasets']['train'], phase='train'), num_gpu=0, dist=False, sampler=None)
    expected = []
    batches = (batch for _ in range(3) for batch in loader)  # BasicSR's loop: a new pass after each epoch
    for current_iter in range(1, 8):  # BasicSR's loop: current_iter += 1 before the step
        model.feed_data(next(batches))
        model.optimize_parameters(current_iter)
        expected.append(_snapshot(model.net_g))
        assert model.log_dict['gumbel_tau'] == expected[-1][2] and model.log_dict['gumbel_noise'] == expected[-1][3]

    record = _Record()
    _runner(gm.GhostSRMMModel(start), tmp_path, 7, [gm.GhostScheduleHook(), record]).train()
    assert [s[:2] for s in record.steps] == [(i, 1 + (i - 1) // 3) for i in range(1, 8)]
    assert record.steps == expected
    assert len({tuple(s[4]) for s in expected}) > 1  # the offsets did change with the iteration


def test_runner_trains_a_ghost_network_from_the_example_config(tmp_path):
    cfg = Config.fromfile(EXAMPLE)
    cfg.model.network.update(num_feat=8, num_block=1)
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False, batch_size=2)
    cfg.train_dataloader['dataset'] = dict(type='SyntheticSRDataset', num_images=4, size=16, scale=2)
    cfg.train_cfg.max_iters = 4
    cfg.param_scheduler[0].T_max = 4
    cfg.optim_wrapper.optimizer.lr = 1e-2
    runner = Runner.from_cfg(cfg)
    net = runner.model.network
    before = {k: v.clone() for k, v in net.state_dict().items()}
    runner.train()
    assert int(net.ghost_schedule.iteration) == 4 and net.ghost_schedule.iters_per_epoch == 2  # 4 images, batch 2
    assert not torch.equal(before['body.0.conv1.weight'], net.state_dict()['body.0.conv1.weight'])
    assert not torch.equal(before['body.0.conv1.shift_logits'], net.state_dict()['body.0.conv1.shift_logits'])
    hub = runner.message_hub
    assert hub.get_scalar('train/gumbel_noise').current() == pytest.approx(0.97)  # epoch 2 at iteration 4
    assert 0 <= hub.get_scalar('train/ghost_moved').current() <= 1


def test_hook_refuses_a_bad_epoch_length():
    with pytest.raises(ValueError, match='positive integer or None'):
        gm.GhostScheduleHook(iters_per_epoch=0)
