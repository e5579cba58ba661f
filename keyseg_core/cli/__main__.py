"""`python -m keyseg_core.cli`: the `keyseg` command."""

import sys

from keyseg_core.cli.app import main

sys.exit(main())
