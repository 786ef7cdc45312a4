"""`python -m engine`: run the engine process (the add-on starts it; it speaks engine.protocol on stdin/stdout)."""

import os
import sys

from engine import warmup
from engine.server import main

code = main()
if warmup.running():   # still importing: leave now rather than finalize Python under a half-done import
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
