import sys

from driftax.cli import main

sys.exit(main())
