"""`python -m deepcrl.cli VERB ...` is the `deepcrl` console script."""

import sys

from deepcrl.cli import main

sys.exit(main())
