"""``python -m kproxy_emu``: the same as the ``kproxy-emu`` command."""

import sys

from .cli import main

sys.exit(main())
