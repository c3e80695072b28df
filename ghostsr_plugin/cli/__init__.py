"""The commands, one module each, behind one entry point::

    ghostsr <command> [arguments]              (the console script setup.py installs)
    python -m ghostsr_plugin <command> [arguments]

Each command module is a thin front: its ``main(argv)`` parses the arguments and calls one library function.
:func:`main` runs it through :func:`ghostsr_plugin.utils.errors.run_command`, so bad input is one line
``ghostsr <command>: error: ...`` and exit code 2 (1 for a full disk), the traceback only with ``--debug``.
"""
import importlib
import sys

from ghostsr_plugin.utils.errors import EXIT_BAD_INPUT, run_command

__all__ = ['COMMANDS', 'main', 'run']

# command -> what it does (one line of `ghostsr --help`); the module is ghostsr_plugin.cli.<command>
COMMANDS = {
    'compress': 'your SR network on your images -> a faster Ghost network that keeps its output (no ground truth)',
    'demo': 'the main job: the real pre-trained CARN_M compressed into GhostCARN_M, fine-tuned, scored',
    'train': "train with BasicSR's pipeline (-opt FILE), options checked first, outputs here",
    'test': "PSNR/SSIM with BasicSR's test pipeline (-opt FILE), results here",
    'evaluate': 'Y-PSNR/SSIM of a network on benchmark sets (Set5, Set14, B100, ...)',
    'ghostify': 'any SR network (spandrel checkpoint, option file or arch) -> its Ghost version, clustered (§3.2)',
    'cluster': 'initialise a Ghost network of an option file from a pre-trained plain checkpoint (§3.2)',
    'convert': "the authors' CARN / CARN_M checkpoints -> BasicSR checkpoints of the plugin's CARN / CARN_M",
    'upscale': 'upscale images with any model, tiled (grey, RGBA, 16-bit kept)',
    'export': 'ONNX and torch.export programs of a network, checked against PyTorch',
    'report': 'what GhostSR bought: params, FLOPs, latency, PSNR of plain and Ghost networks (Table 1, plot)',
    'bench': 'speed: the ghost op against a copy, GhostEDSR against EDSR, ghostify against the Ghost archs',
    'prepare_data': 'BasicSR training data from HR folders: sub-images, MATLAB-bicubic LR, LMDB',
}


def usage():
    width = max(map(len, COMMANDS))
    lines = [f'  {name:<{width}}  {line}' for name, line in COMMANDS.items()]
    return ('usage: ghostsr <command> [arguments]   (also: python -m ghostsr_plugin <command> ...)\n\n'
            'GhostSR for BasicSR. Commands:\n' + '\n'.join(lines) +
            '\n\n`ghostsr <command> --help` shows the arguments of one command.')


def run(command, argv=()):
    """Run ``command`` with the arguments ``argv`` as ``ghostsr command argv...`` does; returns the exit code."""
    if command not in COMMANDS:
        print(f'ghostsr: error: unknown command {command!r}; allowed: {", ".join(COMMANDS)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    module = importlib.import_module(f'ghostsr_plugin.cli.{command}')
    return run_command(f'ghostsr {command}', module.main, list(argv))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(usage())
        return 0 if argv else EXIT_BAD_INPUT
    return run(argv[0], argv[1:])
