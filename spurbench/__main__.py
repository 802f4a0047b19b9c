import sys

from spurbench.cli import main

sys.exit(main())
