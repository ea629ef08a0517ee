import sys

from medmamba.cli import main

sys.exit(main())
