"""``python -m kproxy_emu.cli``: the same as the ``kproxy-emu`` command."""

import sys

from . import main

sys.exit(main())
