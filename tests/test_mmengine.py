"""MMEngine integration (ghostsr_plugin.integrations.mmengine): ``import ghostsr_plugin`` does not import mmengine
and a Python config loads the integration through custom_imports and builds ``type='GhostEDSR'``; every arch the
plugin registers into BasicSR is in the ``ghostsr_plugin`` model registry (new ones too); GhostScheduleHook gives, at
every iteration, the same τ, noise scale, epoch and drawn offsets as GhostSRModel; a tiny Runner loop built from
options/mmengine_GhostEDSR_x2.py trains a Ghost network on generated data; the Runner's checkpoint loading
(``load_from``, ``resume``, ``load_checkpoint``) is weights-only even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
(issue 18, item 9): a hostile pickle is refused with its file named and runs nothing, and the Runner still resumes
its own checkpoints."""
import copy
import itertools
import os
import re
import subprocess
import sys

import pytest
import torch

import ghostsr_plugin  # noqa: F401
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.utils.checkpoint import CheckpointError
from ghostsr_plugin.integrations import mmengine as gm
from ghostsr_plugin.ops.ghost_conv import ghost_layers
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

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


def _example_cfg(tmp_path, max_iters, **extra):
    """options/mmengine_GhostEDSR_x2.py cut down: a tiny network, generated data, a checkpoint every 2 iterations."""
    cfg = Config.fromfile(EXAMPLE)
    cfg.model.network.update(num_feat=8, num_block=1)
    cfg.work_dir = str(tmp_path / 'work_dir')
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False, batch_size=2)
    cfg.train_dataloader['dataset'] = dict(type='SyntheticSRDataset', num_images=4, size=16, scale=2)
    cfg.train_cfg.max_iters = max_iters
    cfg.param_scheduler[0].T_max = 4
    cfg.default_hooks.checkpoint.interval = 2
    cfg.experiment_name = f'weights_only_{next(_RUNS)}'  # MMEngine's default (the time) repeats within a second
    cfg.update(extra)
    return cfg


_RUNS = itertools.count()


@pytest.fixture
def unsafe_environment(monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: torch.load without an explicit weights_only unpickles anything."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def _hostile_checkpoint(tmp_path, marker):
    from hardening_helpers import Hostile
    path = tmp_path / 'hostile.pth'
    torch.save({'meta': Hostile(marker), 'state_dict': {}}, path)
    return str(path)


def test_mmengine_own_loader_would_run_it(tmp_path, unsafe_environment):
    """The control: MMEngine's own local loader (mmengine.runner.checkpoint.load_from_local, what the Runner used
    before) runs the planted pickle under the variable, so a missing marker below means the plugin's loader stopped
    it."""
    import mmengine.runner.checkpoint as mmengine_checkpoint
    marker = tmp_path / 'control_marker'
    with pytest.warns(UserWarning, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        mmengine_checkpoint.load_from_local(_hostile_checkpoint(tmp_path, marker), 'cpu')
    assert marker.exists()


@pytest.mark.parametrize('how', ['load_from', 'resume', 'load_checkpoint'])
def test_runner_refuses_a_hostile_checkpoint_whatever_the_environment(tmp_path, unsafe_environment, how):
    """With TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: the Runner's load_from, resume (load_from + resume=True) and
    load_checkpoint read the file weights-only; the error names the file and says nothing ran; no marker."""
    marker = tmp_path / 'marker'
    path = _hostile_checkpoint(tmp_path, marker)
    assert CheckpointLoader._get_checkpoint_loader(path) is gm.load_from_local_weights_only
    extra = {} if how == 'load_checkpoint' else dict(load_from=path, resume=how == 'resume')
    runner = Runner.from_cfg(_example_cfg(tmp_path, 1, **extra))
    with pytest.raises(CheckpointError) as err:
        runner.load_checkpoint(path) if how == 'load_checkpoint' else runner.train()
    assert re.match(rf'{re.escape(path)} was not loaded: it refers to (posix|nt|os)\.system,', str(err.value))
    assert 'nothing in it ran' in str(err.value)
    assert not marker.exists()


def test_a_getattr_other_than_history_buffer_statistics_is_refused(tmp_path, unsafe_environment):
    """The one getattr an MMEngine checkpoint needs (HistoryBuffer's statistics methods) is all that is allowed."""
    from mmengine.logging import HistoryBuffer

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'update')

    path = tmp_path / 'sneaky.pth'
    torch.save({'meta': Sneaky()}, path)
    with pytest.raises(CheckpointError, match=f'{path} was not loaded: it refers to builtins.getattr'):
        gm.load_from_local_weights_only(str(path), 'cpu')


def test_runner_resumes_its_own_checkpoint_weights_only(tmp_path, unsafe_environment):
    """A Runner's own checkpoint (message hub with HistoryBuffers and numpy arrays, optimizer, scheduler) resumes
    and loads weights-only under the variable; the types allowed for it are allowed during that load only."""
    Runner.from_cfg(_example_cfg(tmp_path, 2)).train()
    saved = tmp_path / 'work_dir' / 'iter_2.pth'
    assert saved.is_file()
    before = list(torch.serialization.get_safe_globals())
    runner = Runner.from_cfg(_example_cfg(tmp_path, 4, resume=True))
    runner.train()
    assert runner.iter == 4 and int(runner.model.network.ghost_schedule.iteration) == 4
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 4  # the two resumed losses and two new ones
    checkpoint = Runner.from_cfg(_example_cfg(tmp_path / 'other', 1)).load_checkpoint(str(saved))
    assert checkpoint['meta']['iter'] == 2
    assert list(torch.serialization.get_safe_globals()) == before


def test_other_schemes_refuse_to_load_under_the_variable(unsafe_environment):
    """A URL (or open-mmlab://, s3://, ...) would go through MMEngine's torch.load without weights_only: refused while
    the variable is set, before anything is downloaded, with the address named."""
    url = 'https://example.invalid/ghost.pth'
    with pytest.raises(ValueError, match=f'{url}: not loaded: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set'):
        CheckpointLoader.load_checkpoint(url, 'cpu')
    assert all(getattr(loader, 'ghostsr_weights_only', False) or loader is gm.load_from_local_weights_only
               for loader in CheckpointLoader._schemes.values())
