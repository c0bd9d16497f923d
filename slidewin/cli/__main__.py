import sys

from slidewin.cli import main

sys.exit(main())
