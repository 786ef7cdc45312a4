"""`blender -b [file.blend] -P script -- args`, emulated with the bpy module: what Blender does before and while
running the script (PyC_DefaultNameSpace + BPY_run_filepath): a new __main__ module with __file__, executed in
place. There is no Blender binary on our machines, so tests and benchmarks run batch.py through this.

    python tools/blender_emulator.py -b [scene.blend] -P blender_addon/batch.py -- [options]
"""

import sys
import types

import bpy

if __name__ == "__main__":
    argv = sys.argv[1:]
    blend = argv[argv.index("-b") + 1] if argv[argv.index("-b") + 1].endswith(".blend") else None
    script = argv[argv.index("-P") + 1]
    if blend:
        bpy.ops.wm.open_mainfile(filepath=blend)
    sys.argv = ["blender"] + argv
    main = types.ModuleType("__main__")
    main.__file__ = script
    sys.modules["__main__"] = main
    with open(script) as fh:
        code = compile(fh.read(), script, "exec")
    exec(code, main.__dict__)
