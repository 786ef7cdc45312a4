"""Motion generators behind one interface (base.py); `--generator` picks one by name."""
