# GhostEDSR x2 (EDSR-L: 256 features, 32 residual blocks, res_scale 0.1; λ 0.5, d 1, learnable shift) trained by
# MMEngine's Runner with the settings of options/train_GhostEDSR_x2.yml (§4.1): DIV2K 48x48 LR patches, batch 16,
# flips and 90° rotations, Adam 1e-4 (β 0.9/0.999, ε 1e-8) with cosine decay, L1, 300k iterations.
# GhostScheduleHook drives the Gumbel schedule (Eq. 3-5) from the runner's iteration exactly as GhostSRModel does.
# Run:
#   python -c "from mmengine.config import Config; from mmengine.runner import Runner; \
#              Runner.from_cfg(Config.fromfile('options/mmengine_GhostEDSR_x2.py')).train()"
custom_imports = dict(imports=['ghostsr_plugin.integrations.mmengine'], allow_failed_imports=False)
default_scope = 'ghostsr_plugin'
work_dir = 'experiments/mmengine_GhostEDSR_x2'

scale = 2
model = dict(
    type='GhostSRMMModel',
    network=dict(
        type='GhostEDSR', num_in_ch=3, num_out_ch=3, num_feat=256, num_block=32, upscale=scale, res_scale=0.1,
        ghost_ratio=0.5, ghost_d=1, shift_mode='learnable', gumbel_a=0.97, gumbel_tau=1.0),
    pixel_loss=dict(type='L1Loss', loss_weight=1.0))

train_dataloader = dict(
    batch_size=16,
    num_workers=6,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='BasicSRDataset',
        scale=scale,
        dataset=dict(
            type='PairedImageDataset',
            dataroot_gt='datasets/DIV2K/DIV2K_train_HR_sub',  # made by ghostsr prepare_data
            dataroot_lq='datasets/DIV2K/DIV2K_train_LR_bicubic/X2_sub',
            filename_tmpl='{}',
            io_backend=dict(type='disk'),
            gt_size=48 * scale,
            use_hflip=True,
            use_rot=True)))

train_cfg = dict(type='IterBasedTrainLoop', max_iters=300_000)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999), eps=1e-8))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=300_000, eta_min=1e-7, by_epoch=False)]

custom_hooks = [dict(type='GhostScheduleHook', iters_per_epoch=None)]  # None: BasicSR's epoch of the train set
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=5000, by_epoch=False, max_keep_ckpts=3))
randomness = dict(seed=0)
