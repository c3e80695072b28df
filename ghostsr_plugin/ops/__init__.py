"""The ghost/shift operation (§3.1): reference semantics, dispatch to compiled kernels, the ghost module and the
per-network Gumbel schedule."""
from ghostsr_plugin.ops.ghost_conv import (SHIFT_MODES, GhostConv2d, GhostOptions, check_ghost_options, ghost_layers,
                                           ghost_offsets)
from ghostsr_plugin.ops.schedule import GhostSchedule, attach_schedule
from ghostsr_plugin.ops.gumbel import gumbel_schedule, sample_offsets
from ghostsr_plugin.ops.shift import (centre_offset, default_index, ghost_shift, ghost_shift_reference, offset_to_shift,
                                      shift2d, shift_to_offset, window_size)

__all__ = [
    'SHIFT_MODES', 'GhostConv2d', 'GhostOptions', 'GhostSchedule', 'attach_schedule', 'check_ghost_options', 'ghost_layers', 'ghost_offsets',
    'gumbel_schedule', 'sample_offsets', 'centre_offset', 'default_index', 'ghost_shift', 'ghost_shift_reference',
    'offset_to_shift', 'shift2d', 'shift_to_offset', 'window_size'
]
