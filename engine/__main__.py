"""`python -m pt_engine` = `pt-engine`."""
import sys

from .cli import main

sys.exit(main())
