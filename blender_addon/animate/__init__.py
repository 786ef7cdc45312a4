"""Animate: a prompt on a Gaussian object becomes the engine's "animate" request; its motion becomes reduced
Bézier keys on the object, or an armature with keyed bones. The engine half: engine/motion."""
