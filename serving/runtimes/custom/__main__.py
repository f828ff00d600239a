"""``python -m vatic.serving.runtimes.custom module:app``: see :mod:`vatic.serving.runtimes.custom.serve`."""

import sys

from vatic.serving.runtimes.custom.serve import main

sys.exit(main())
