"""Segment: click, box or text on a view becomes the engine's "segment" request; its mask becomes the object's
highlighted selection, and Apply splits it into its own object. The engine half: engine/segment."""
