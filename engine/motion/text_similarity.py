"""Matching a prompt to named candidates (motion presets and their aliases) by open_clip text embeddings,
when the CLIP weights are on this machine; the model and its loading are engine/segment/clip_text.py's.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..models.registry import ModelUnavailableError, is_available

_CACHE: dict[str, Any] = {}   # the loaded text model, and candidate embeddings by phrase tuple


def text_model_available() -> bool:
    """True when the open_clip weights are on this machine (no download is tried)."""
    from ..segment.clip_text import DEFAULT_CLIP
    try:
        return is_available(DEFAULT_CLIP)
    except ModelUnavailableError:
        return False


def _default_clip() -> Any:
    if "clip" not in _CACHE:
        from ..segment.clip_text import DEFAULT_CLIP, load_clip
        if not text_model_available():
            raise ModelUnavailableError("the CLIP text model is not on this machine, so prompts are matched by "
                                        "aliases only", hint=f"fetch the model {DEFAULT_CLIP} once to match by meaning")
        _CACHE["clip"] = load_clip("cpu")
    return _CACHE["clip"]


def similarities(prompt: str, phrases: Sequence[str], clip: Any = None) -> Any:
    """(len(phrases),) cosine similarity of the prompt's text embedding with each phrase's (numpy float32)."""
    from ..segment.clip_text import encode_text

    clip = clip if clip is not None else _default_clip()
    # Preset phrases are the same on every call: embed them once per model (the entry keeps the model itself,
    # so a new model that reuses a freed object's id never gets another model's embeddings).
    key = ("phrases", id(clip), tuple(phrases))
    cached = _CACHE.get(key)
    if cached is None or cached[0] is not clip:
        cached = _CACHE[key] = (clip, encode_text(clip, list(phrases)))
    query = encode_text(clip, [prompt])[0]
    return (cached[1] @ query).cpu().numpy().astype("float32")


def best_match(prompt: str, candidates: Sequence[str] | Mapping[str, Sequence[str]], clip: Any = None
               ) -> tuple[str, float]:
    """The candidate closest in meaning to the prompt, and its cosine similarity in [-1, 1].

    `candidates` is a list of phrases (the best phrase is returned) or a mapping name -> phrases (the name whose
    best phrase is closest is returned). Raises ModelUnavailableError when no CLIP weights are here and no
    `clip` model (engine.segment.clip_text.ClipModel) is given.
    """
    if isinstance(candidates, Mapping):
        names = [name for name, phrases in candidates.items() for _ in (phrases or [name])]
        phrases = [phrase for name, phrases in candidates.items() for phrase in (phrases or [name])]
    else:
        names = phrases = list(candidates)
    if not phrases:
        raise ValueError("no candidates to match the prompt against")
    scores = similarities(" ".join(prompt.split()), phrases, clip)
    best = int(scores.argmax())
    return names[best], float(scores[best])
