"""How the plugin's commands deliver errors: one line ``<command>: error: <message>`` and exit code 2 for bad input
(options, files, images, checkpoints), the traceback only with ``--debug`` or ``GHOSTSR_DEBUG=1``.

    sys.exit(run_command('ghostsr upscale', main, argv))   # what ghostsr_plugin.cli.run does for every command

A command raises :class:`UserInputError` (or ValueError / KeyError / FileNotFoundError / NotADirectoryError /
PermissionError / IsADirectoryError, which are taken as bad input too) with a message that names what is wrong
and what is allowed; a full disk (an OSError with errno ENOSPC / EDQUOT, e.g.
:class:`ghostsr_plugin.utils.atomic.NoSpaceLeftError`) is one line too, exit code 1; anything else is a bug
and keeps its traceback. :class:`RunFailedError` is a step that ran and failed with its own report (a training
subprocess, an export that does not match PyTorch): one line, exit code 1.
"""
import errno
import os
import sys
import traceback

__all__ = ['UserInputError', 'RunFailedError', 'INPUT_ERRORS', 'EXIT_BAD_INPUT', 'EXIT_FAILED', 'debug_requested', 'error_line',
           'run_command']

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # the input was fine, the machine was not (a full disk)


class UserInputError(ValueError):
    """Bad input named in the message (an option, a file, an image, a checkpoint)."""


class RunFailedError(RuntimeError):
    """A step that ran and failed with its own report (e.g. a training subprocess): one line, exit code 1."""


INPUT_ERRORS = (UserInputError, ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError)


def debug_requested(argv=None):
    """True with ``--debug`` on the command line or ``GHOSTSR_DEBUG=1`` in the environment."""
    argv = sys.argv[1:] if argv is None else argv
    return '--debug' in argv or os.environ.get('GHOSTSR_DEBUG', '0') not in ('', '0')


def error_line(command, err):
    """``<command>: error: <message>`` for an exception (KeyError's quotes removed)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename and err.strerror:  # '[Errno 2] No such file...: 'x'' -> 'x: No such...'
        message = f'{err.filename}: {err.strerror}'
    return f'{command}: error: {message}'


def run_command(command, main, argv=None):
    """Run ``main(argv)``; bad input becomes one line on stderr and exit code 2 (a traceback with ``--debug`` /
    ``GHOSTSR_DEBUG=1``). Returns ``main``'s exit code (0 for None)."""
    try:
        code = main(argv)
    except INPUT_ERRORS as err:
        return _report(command, err, argv, EXIT_BAD_INPUT)
    except RunFailedError as err:
        return _report(command, err, argv, EXIT_FAILED)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        return _report(command, err, argv, EXIT_FAILED)
    return 0 if code is None else code


def _report(command, err, argv, code):
    if debug_requested(argv):
        traceback.print_exc()
    print(error_line(command, err), file=sys.stderr, flush=True)
    return code
