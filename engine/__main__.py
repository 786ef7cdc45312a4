"""`python -m engine`: run the engine process (the add-on starts it; it speaks engine.protocol on stdin/stdout)."""

import sys

from engine.server import main

sys.exit(main())
