"""`python -m core …`: the headless command line."""
import sys

from core.cli import main

if __name__ == "__main__":   # not when a multiprocessing child re-imports the main module
    sys.exit(main())
