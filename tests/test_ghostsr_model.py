"""GhostSRModel pieces: DDP ranks draw the same Gumbel noise (2-process gloo on CPU), EMA keeps the channel maps,
checkpoints are written atomically, iters_per_epoch comes from the data."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import ghostsr_plugin  # noqa: F401
from basicsr.archs import build_network
from ghostsr_plugin.ops.ghost_conv import ghost_layers
from ghostsr_plugin.utils.atomic import atomic_torch_save

NET = {'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'upscale': 2}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, result_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initial weights on both ranks, as DDP broadcasts them anyway
    net = build_network(NET)
    ddp = DistributedDataParallel(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    torch.manual_seed(100 + rank)  # different data (and a different global RNG) on each rank
    record = []
    for iteration in range(1, 6):
        net.ghost_schedule.set_iteration(iteration, iters_per_epoch=2)
        optimizer.zero_grad()
        ddp(torch.rand(2, 3, 8, 8)).abs().mean().backward()
        optimizer.step()
        layers = ghost_layers(net)
        record.append({
            'offsets': [layer._plan[0] for layer in layers],
            'probs': torch.stack([layer._plan[1].detach() for layer in layers]),
            'logits': torch.stack([layer.shift_logits.detach().clone() for layer in layers]),
        })
    torch.save(record, os.path.join(result_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_ddp_ranks_draw_the_same_noise(tmp_path):
    """Two gloo ranks with different data: at every iteration both pick the same offsets from the same S(W'), and
    the learned W' stay identical (gradients are all-reduced)."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    for step0, step1 in zip(rank0, rank1):
        assert step0['offsets'] == step1['offsets']
        assert torch.equal(step0['probs'], step1['probs'])
        assert torch.equal(step0['logits'], step1['logits'])
    assert rank0[0]['offsets'] != rank0[-1]['offsets'] or not torch.equal(rank0[0]['probs'], rank0[-1]['probs'])


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'net_g_10.pth'
    atomic_torch_save({'a': torch.ones(2)}, target)

    def broken_save(obj, file):
        file.write(b'half a checkpoint')
        raise KeyboardInterrupt  # killed in the middle of writing

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({'a': torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target)['a'], torch.ones(2))  # the previous file is intact
    assert os.listdir(tmp_path) == ['net_g_10.pth']  # no temporary left behind


def test_model_iters_per_epoch_and_ema_buffers(tiny_data, tmp_path):
    """iters_per_epoch = ceil(images / batch); EMA copies the channel maps (buffers BasicSR's EMA skips)."""
    from basicsr.models import build_model
    from conftest import train_options
    opt = train_options('unit', dict(NET), tiny_data)
    opt['train']['ema_decay'] = 0.5
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path))
    model = build_model(opt)
    assert model.iters_per_epoch == 3  # 6 images, batch 2
    custom = torch.tensor([4, 0, 5, 1, 6, 2, 7, 3])
    model.net_g.body[0].conv1.set_index(custom)
    model.model_ema(0.5)
    assert torch.equal(model.net_g_ema.body[0].conv1.ghost_index, custom)
    model.save(epoch=0, current_iter=1)
    saved = torch.load(tmp_path / 'net_g_1.pth', weights_only=True)
    assert torch.equal(saved['params_ema']['body.0.conv1.ghost_index'], custom)
    assert torch.load(tmp_path / '1.state', weights_only=True)['ghost']['iters_per_epoch'] == 3


def test_shift_logits_get_their_own_learning_rate(tiny_data, tmp_path):
    """`ghost: shift_lr_mult` puts W' in a second optimizer group at lr x mult; everything else keeps lr."""
    from basicsr.models import build_model
    from conftest import train_options
    opt = train_options('lr_groups', dict(NET), tiny_data)
    opt['ghost'] = {'shift_lr_mult': 100}
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    model = build_model(opt)
    others, logits = model.optimizer_g.param_groups
    assert logits['lr'] == pytest.approx(100 * others['lr'])
    assert len(logits['params']) == len(ghost_layers(model.net_g)) == 5
    assert all(p.shape == (9, ) for p in logits['params'])
    opt['ghost'] = {'shift_lr_mult': 0}
    with pytest.raises(ValueError, match='shift_lr_mult must be a positive number'):
        build_model(opt)


def _distill_model(tiny_data, tmp_path, **distill):
    """A GhostSRModel clustered from a random plain EDSR, distilling from it."""
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.models import build_model
    from conftest import train_options
    torch.manual_seed(0)
    plain_opt = {k: v for k, v in NET.items() if k != 'type'}
    plain_path = str(tmp_path / 'plain.pth')
    torch.save({'params': EDSR(**plain_opt).state_dict()}, plain_path)
    opt = train_options('distill', dict(NET, shift_mode='copy'), tiny_data)
    opt['ghost_init'] = {'pretrain_path': plain_path, 'init_offset': 'centre'}
    opt['distill'] = distill
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), experiments_root=str(tmp_path))
    return build_model(opt), plain_path


def test_distill_adds_l1_to_the_frozen_plain_teacher(tiny_data, tmp_path):
    """`distill:` builds the plain twin (EDSR for GhostEDSR) from ghost_init's checkpoint, frozen in eval mode, and
    adds loss_weight * L1(net_g(lq), teacher(lq)) to the pixel loss; the teacher is never saved."""
    model, plain_path = _distill_model(tiny_data, tmp_path, loss_weight=0.5)
    assert type(model.teacher).__name__ == 'EDSR' and not model.teacher.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    teacher_state = model.teacher.state_dict()
    for key, value in torch.load(plain_path, weights_only=True)['params'].items():
        assert torch.equal(teacher_state[key], value)
    torch.manual_seed(1)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    model.feed_data({'lq': lq, 'gt': gt})
    with torch.no_grad():
        model.net_g.eval()
        before = model.net_g(lq)  # copy ghosts: train and eval forwards are the same
        model.net_g.train()
        expected_distill = 0.5 * (before - model.teacher(lq)).abs().mean()
        expected_pix = (before - gt).abs().mean()
    model.optimize_parameters(1)
    assert model.log_dict['l_distill'] == pytest.approx(expected_distill.item(), rel=1e-5)
    assert model.log_dict['l_pix'] == pytest.approx(expected_pix.item(), rel=1e-5)
    assert all(torch.equal(teacher_state[k], v) for k, v in model.teacher.state_dict().items())  # still frozen
    model.save(epoch=0, current_iter=1)
    saved = torch.load(tmp_path / 'net_g_1.pth', weights_only=True)['params']
    assert set(saved) == set(model.net_g.state_dict())


def test_distill_bad_options_are_named(tiny_data, tmp_path):
    with pytest.raises(ValueError, match='distill: loss_weight must be a positive number'):
        _distill_model(tiny_data, tmp_path, loss_weight=0)
    with pytest.raises(ValueError, match=r'distill: unknown option\(s\) weight; allowed: loss_weight'):
        _distill_model(tiny_data, tmp_path, weight=1)
    with pytest.raises(ValueError, match=r'does not fit EDSR: "conv_first.weight" has shape \(1,\)'):
        torch.save({'params': {'conv_first.weight': torch.zeros(1)}}, tmp_path / 'bad.pth')
        _distill_model(tiny_data, tmp_path, teacher_path=str(tmp_path / 'bad.pth'))


def _unit_model(tiny_data, tmp_path, name='unit', net=None, **top):
    from basicsr.models import build_model
    from conftest import train_options
    opt = train_options(name, dict(net or NET), tiny_data)
    opt.update(top)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), experiments_root=str(tmp_path))
    return build_model(opt)


def test_freeze_offsets_at_fixes_argmax_and_stops_training_w(tiny_data, tmp_path):
    """`ghost: freeze_offsets_at: 3`: from iteration 3 on every learnable layer uses argmax W' (no noise), W' no
    longer changes, the EMA net uses the same offsets, and the training state records the freeze point."""
    model = _unit_model(tiny_data, tmp_path, ghost={'freeze_offsets_at': 3, 'shift_lr_mult': 100},
                        train=dict(_unit_train(), ema_decay=0.5))
    torch.manual_seed(0)
    batch = {'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)}
    layers = ghost_layers(model.net_g)
    logits_at = {}
    for iteration in range(1, 6):
        model.feed_data(batch)
        model.optimize_parameters(iteration)
        logits_at[iteration] = torch.stack([m.shift_logits.detach().clone() for m in layers])
    assert not torch.equal(logits_at[1], logits_at[2])  # W' trained before the freeze
    assert torch.equal(logits_at[3], logits_at[5])  # ... and not after it
    assert model.offsets_frozen_at == 3 and model.log_dict['ghost_frozen'] == 1.0
    argmax = [int(row.argmax()) for row in logits_at[5]]
    assert [m.fixed_offset for m in layers] == argmax
    assert [m.current_offset() for m in layers] == [(a, None) for a in argmax]  # no noise, no STE probs
    assert [m.fixed_offset for m in ghost_layers(model.net_g_ema)] == argmax
    model.save(epoch=0, current_iter=5)
    assert torch.load(tmp_path / '5.state', weights_only=True)['ghost']['offsets_frozen_at'] == 3


def test_freeze_offsets_at_fraction_and_bad_values(tiny_data, tmp_path):
    model = _unit_model(tiny_data, tmp_path, ghost={'freeze_offsets_at': 0.5}, train=dict(_unit_train(), total_iter=10))
    assert model.freeze_iter == 5
    for bad in (0, 1.5, 'half', True):
        with pytest.raises(ValueError, match='ghost: freeze_offsets_at'):
            _unit_model(tiny_data, tmp_path, ghost={'freeze_offsets_at': bad})


def _unit_train():
    from conftest import train_options
    return train_options('x', dict(NET), {'hr': '', 'lr': ''})['train']


def test_save_best_keeps_the_best_validation_checkpoint(tiny_data, tmp_path):
    """`val: save_best: psnr`: net_g_best.pth and best.json follow the best figure of the first validation set
    (a worse later figure leaves them); the record is carried in the training state."""
    model = _unit_model(tiny_data, tmp_path)
    model.opt['val']['save_best'] = 'psnr'
    from ghostsr_plugin.models.ghostsr_model import _best_metric_option
    model.best_metric = _best_metric_option(model.opt)
    model._initialize_best_metric_results('tiny_val')
    model._update_best_metric_result('tiny_val', 'psnr', 30.0, 2)
    first = torch.load(tmp_path / 'net_g_best.pth', weights_only=True)['params']
    with torch.no_grad():
        model.net_g.conv_first.weight.add_(1)
    model._update_best_metric_result('tiny_val', 'psnr', 29.0, 3)  # worse: nothing written
    model._update_best_metric_result('tiny_val', 'ssim', 0.99, 3)  # another metric: ignored
    assert torch.equal(torch.load(tmp_path / 'net_g_best.pth', weights_only=True)['params']['conv_first.weight'],
                       first['conv_first.weight'])
    model._update_best_metric_result('tiny_val', 'psnr', 31.5, 6)  # better: the new weights; BasicSR's validation
    # after the loop passes current_iter > total_iter (4 here): the record says the last iteration
    best = torch.load(tmp_path / 'net_g_best.pth', weights_only=True)['params']
    assert torch.equal(best['conv_first.weight'], model.net_g.conv_first.weight.detach())
    import json
    record = json.loads((tmp_path / 'best.json').read_text())
    assert (record['dataset'], record['metric'], record['value'], record['iter']) == ('tiny_val', 'psnr', 31.5, 4)
    model.save(epoch=0, current_iter=4)
    assert torch.load(tmp_path / '4.state', weights_only=True)['ghost']['best']['value'] == 31.5
    model.opt['val']['save_best'] = 'lpips'
    with pytest.raises(ValueError, match=r'val: save_best must name a metric of val: metrics \(psnr, ssim\)'):
        _best_metric_option(model.opt)


def test_frozen_offsets_and_best_checkpoint_survive_resume(tiny_data, tmp_path):
    """Through `ghostsr train`: offsets frozen at iteration 2 stay frozen (same W', same moves)
    after --auto_resume, and the best-validation record is carried over instead of restarting."""
    import json
    from conftest import python, run, train_options, write_options
    opt = train_options('freeze_resume', dict(NET), tiny_data, total_iter=4)
    opt['ghost'] = {'freeze_offsets_at': 2, 'shift_lr_mult': 100}
    opt['val'].update(val_freq=1, save_best='psnr')
    opt['train']['scheduler']['periods'] = [6]
    assert run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)],
               cwd=tmp_path).returncode == 0
    models = tmp_path / 'experiments' / 'freeze_resume' / 'models'
    best_before = json.loads((models / 'best.json').read_text())
    opt['train']['total_iter'] = 6
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path), '--auto_resume'],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logits = {}
    for name in ('net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth'):
        params = torch.load(models / name, weights_only=True)['params']
        logits[name] = torch.stack([v for k, v in sorted(params.items()) if k.endswith('shift_logits')])
    assert torch.equal(logits['net_g_2.pth'], logits['net_g_latest.pth'])
    logs = sorted((tmp_path / 'experiments' / 'freeze_resume').glob('train_*.log'))
    assert 'offsets frozen at iteration 2' in logs[-1].read_text()  # the resumed run, before its first step
    best_after = json.loads((models / 'best.json').read_text())
    assert best_after['value'] >= best_before['value']
    assert best_after['iter'] == best_before['iter'] or best_after['value'] > best_before['value']
