"""Arguments more than one command takes, defined once."""


def add_network_source(parser):
    """The plain network to start from: ``--model`` (spandrel), ``-opt`` (an option file) or ``--arch`` (a registered
    arch with ``--arch_args``), and ``--pretrained`` / ``--param_key`` / ``--network_key`` for the last two."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model', help='checkpoint of any architecture spandrel identifies (.pth/.safetensors)')
    source.add_argument('-opt', help='BasicSR option file whose network (--network_key) is the plain network')
    source.add_argument('--arch', help='registered BasicSR arch of the plain network (with --arch_args)')
    parser.add_argument('--arch_args', default='{}', help='JSON arguments of --arch')
    parser.add_argument('--pretrained', help='plain checkpoint for -opt / --arch (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params', help="state-dict key of --pretrained ('params')")
    parser.add_argument('--network_key', default='network_g', help='option section of the network (network_g)')
