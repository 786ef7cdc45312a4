"""The batch CLI's pieces: its argument parser, progress and estimates, and its JSON report. The entry script is
blender_addon/batch.py (`blender -b -P blender_addon/batch.py -- ...`), a sequence of the steps the operators call."""
