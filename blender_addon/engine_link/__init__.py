"""The link to the engine process: find its Python, start it, talk engine.protocol over its stdin/stdout
without blocking Blender, notice a hung or dead engine, and the modal operator machinery that waits on a request."""
