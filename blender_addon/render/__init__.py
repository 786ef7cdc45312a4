"""Render: the scene's camera and posed Gaussian objects become the engine's "render" request, for Render Splats
(frames to files) and the Gaussian Splats render engine (F12 and the viewport). The engine half: engine/render."""
