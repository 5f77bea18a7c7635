"""``python -m pcc`` runs the command line."""
import sys

from pcc.cli import main

sys.exit(main())
