"""``ghostsr demo``: the main job, the real pre-trained CARN_M compressed into GhostCARN_M on this machine's CPU
(:func:`ghostsr_plugin.pipeline.main_job.run_main_job`; its steps and the data layout are in ``--help``)."""
import argparse
import functools

from ghostsr_plugin.pipeline import main_job
from ghostsr_plugin.pipeline.main_job import DEFAULT_DATA, run_main_job


def main(argv=None):
    parser = argparse.ArgumentParser(prog='ghostsr demo',
                                     description='GhostSR main job: CARN_M -> GhostCARN_M on the CPU.',
                                     epilog=main_job.__doc__[main_job.__doc__.index('Data layout'):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=DEFAULT_DATA, help='data folder (default: ../shared/data)')
    parser.add_argument('--minutes', type=float, default=6.0, help='fine-tune budget in minutes (default 6)')
    parser.add_argument('--iters', type=int, default=None, help='fine-tune iterations (overrides --minutes)')
    parser.add_argument('--scale', type=int, default=2, choices=(2, 3, 4))
    parser.add_argument('--name', default=None, help='experiment name (default GhostCARN_M_x<scale>_demo)')
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14'], help='test sets of the table')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    run_main_job(args.data, args.minutes, args.iters, args.scale, args.name, args.sets,
                 log=functools.partial(print, flush=True))
    return 0
