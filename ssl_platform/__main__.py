import sys

from ssl_platform.cli import main

sys.exit(main())
