import sys

from medmamba.cli import main

if __name__ == "__main__":
    sys.exit(main())
