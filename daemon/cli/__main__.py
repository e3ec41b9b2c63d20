"""`python -m daemon.cli`: the `fusewatch` command without the installed script."""

import sys

from daemon.cli.main import main

sys.exit(main())
