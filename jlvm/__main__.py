import sys

from jlvm.cli import main

sys.exit(main())
