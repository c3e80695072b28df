"""``python -m ghostsr_plugin <command> ...``: the same as the ``ghostsr`` console script."""
import sys

from ghostsr_plugin.cli import main

if __name__ == '__main__':
    sys.exit(main())
