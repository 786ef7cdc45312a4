"""4D queries: a text asked of a dynamic or animated scene becomes the engine's "query4d" request; its answer
is highlighted while scrubbing, marked on the timeline and can become a segment. The engine half: engine/query4d."""
