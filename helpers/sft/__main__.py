"""`python -m helpers.sft`: stage 3 as a script (what `accelerate launch` runs)."""
import sys

from .stage import main

if __name__ == "__main__":
    sys.exit(main())
