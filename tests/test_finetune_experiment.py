"""tools/finetune_experiment.py (issue 12's runner): the validation curve read from a BasicSR log (minutes from the
start of training, iteration, PSNR; BasicSR's repeated final validation counted once), and a run's options with
the budget scaled by --iters (iterations, cosine period, Gumbel epoch, frequencies; a fractional freeze point
stays a fraction), overrides applied by dotted keys, null removing a block; the iterations a run really trained
read from its checkpoint."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import finetune_experiment as fx  # noqa: E402

LOG = """2026-12-02 05:53:21,736 INFO: 
  name: x
2026-12-02 05:53:23,592 INFO: Start training from epoch: 0, iter: 0
2026-12-02 05:53:36,635 INFO: [x..][epoch:  0, iter:       1, lr:(5.000e-04,)] l_pix: 3.0e-02
2026-12-02 05:53:43,548 INFO: [ghost offsets (dy,dx) iter 1] a=+0,+0
2026-12-02 05:53:43,548 INFO: Validation Set5
\t # psnr: 32.1092\tBest: 32.1092 @ 1 iter
\t # ssim: 0.9000\tBest: 0.9000 @ 1 iter

2026-12-02 05:55:23,692 INFO: [x..][epoch:  0, iter:   1,200, lr:(4.268e-04,)] l_pix: 2.9e-02
2026-12-02 05:55:30,603 INFO: Validation Set5
\t # psnr: 34.2172\tBest: 34.2172 @ 1200 iter
2026-12-02 05:55:40,000 INFO: End of training. Time consumed: 0:02:16
2026-12-02 05:55:50,000 INFO: Validation Set5
\t # psnr: 34.2172\tBest: 34.2172 @ 1202 iter
"""


def test_validation_curve_from_a_basicsr_log():
    assert fx.validation_curve(LOG) == [(0.33, 1, 32.1092), (2.12, 1200, 34.2172)]
    assert fx.validation_curve(LOG, 'ssim') == [(0.33, 1, 0.9)]


def test_run_options_scale_the_budget_and_apply_overrides():
    opt = fx.run_options('learnable_s1', fx.RECIPE, {'manual_seed': 1, 'distill': None}, iters=200)
    assert opt['name'] == 'learnable_s1' and opt['manual_seed'] == 1 and opt['distill'] is None
    assert opt['train']['total_iter'] == 200 and opt['train']['scheduler']['periods'] == [200]
    assert opt['val']['val_freq'] == 20 and opt['logger']['save_checkpoint_freq'] == 20
    assert opt['ghost']['iters_per_epoch'] == 1 and opt['ghost']['freeze_offsets_at'] == 0.75
    full = fx.run_options('learnable_s0', fx.RECIPE, {})
    assert full['train']['total_iter'] == 2000 and full['val']['save_best'] == 'psnr'
    assert full['ghost_init']['init_offset'] is None  # W' as the paper starts it, not pinned to "no move"


def test_trained_iter_is_the_checkpoints_schedule_counter(tmp_path):
    """The recorded iterations are the network's own step counter, not the option's total_iter."""
    import torch
    path = tmp_path / 'net_g_latest.pth'
    torch.save({'params': {'ghost_schedule.iteration': torch.tensor(1926), 'w': torch.zeros(1)}}, path)
    assert fx.trained_iter(str(path)) == 1926


def test_lever_names_only_what_the_set_overrides_added():
    copy_run = dict(fx.RUNS['copy_s0'][1])
    assert fx.lever('copy_s0', {'run': 'copy_s0', 'overrides': copy_run}) == '-'
    record = {'run': 'copy_s0', 'overrides': {**copy_run, 'distill.loss_weight': 4}}
    assert fx.lever('lever_teacher4_copy_s0', record) == '`distill.loss_weight=4`'
    # records made before 'run' was kept are named by their key
    assert fx.lever('learnable_s1', {'overrides': fx.RUNS['learnable_s1'][1]}) == '-'


def test_set_values_are_typed():
    """--set train.optim_g.lr=2e-4 must give Adam a float (YAML 1.1 alone reads it as a string)."""
    assert fx.parse_set('train.optim_g.lr=2e-4') == ('train.optim_g.lr', 2e-4)
    assert fx.parse_set('network_g.shift_mode=copy') == ('network_g.shift_mode', 'copy')
    assert fx.parse_set('ghost_init=null') == ('ghost_init', None)
    assert fx.parse_set('manual_seed=1') == ('manual_seed', 1)


def test_a_run_with_ema_is_evaluated_on_its_ema_weights(tmp_path):
    """BasicSR validates the EMA network when train.ema_decay > 0, so the recorded figures and offsets must come from
    'params_ema' too (here it differs from 'params' in one W'); a checkpoint without it falls back to 'params'."""
    import torch
    from basicsr.archs import build_network
    opt = fx.run_options('learnable_s0', fx.RECIPE, {})
    state = build_network(dict(opt['network_g'])).state_dict()
    logits = next(k for k in state if k.endswith('shift_logits'))
    ema = {**state, logits: torch.zeros_like(state[logits]).index_fill_(0, torch.tensor([0]), 1.0)}
    trained = {**state, logits: torch.zeros_like(state[logits]).index_fill_(0, torch.tensor([8]), 1.0)}
    layer = logits.removesuffix('.shift_logits')
    path = tmp_path / 'net_g_latest.pth'
    torch.save({'params': trained, 'params_ema': ema}, path)
    assert fx.evaluate_checkpoint(opt, str(path), None, [])[1][layer] == [-1, -1]  # offset 0 of the 3x3 moves
    torch.save({'params': trained}, path)
    assert fx.evaluate_checkpoint(opt, str(path), None, [])[1][layer] == [1, 1]


def test_the_best_recipe_file_is_the_measured_run():
    """options/finetune_GhostCARN_M_x2_copy.yml is exactly the run measured as issue 12's best recipe
    (finetune_experiment.py copy_s0 --iters 3400), but for its name."""
    import yaml
    with open(os.path.join(ROOT, 'options', 'finetune_GhostCARN_M_x2_copy.yml')) as file:
        committed = yaml.safe_load(file)
    measured = fx.run_options('finetune_GhostCARN_M_x2_copy', fx.RECIPE, dict(fx.RUNS['copy_s0'][1]), iters=3400)
    assert committed == measured
