"""Content-addressed keys: the same request gives the same key across restarts and processes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from clustviz.projectors import library_versions

__all__ = ["aligned_key", "image_key", "map_image_key", "projection_key"]

# Bump when clustviz changes a result without a library changing (layout code, clamping rules).
RESULT_VERSION = "1"
# Bump when clustviz.render changes how a plot looks.
RENDER_VERSION = "1"
# Bump when clustviz.alignment (or ClusterPlot's aligner) changes an aligned layout.
ALIGN_VERSION = "2"


def projection_key(
    *, fingerprint: str, preamble: str, projector: str, params_used: dict[str, Any]
) -> str:
    """Hash of everything that shapes a projection: data, preamble, projector, resolved params
    (the seed among them), and the versions of the code and libraries that compute it."""
    payload = {
        "fingerprint": fingerprint,
        "preamble": preamble,
        "projector": projector,
        "params": params_used,
        "versions": library_versions(projector),
        "clustviz": RESULT_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def aligned_key(layout: str, map_id: str, params: dict[str, Any]) -> str:
    """Key of a layout aligned to a map: the layout's key, the map's id (it names the map's
    content) and the alignment's parameters. The layout itself keeps its own key."""
    payload = {"layout": layout, "map": map_id, "params": params, "align": ALIGN_VERSION}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "aligned." + hashlib.sha256(text.encode()).hexdigest()[:32]


def image_key(projection: str, fmt: str, *, width: float, height: float, dpi: int) -> str:
    """Key of one rendered plot: the projection's key plus format, size and renderer version."""
    return f"{projection}.r{RENDER_VERSION}.{fmt}.{width:g}x{height:g}@{dpi}"


def map_image_key(
    map_id: str, preamble: str, fmt: str, *, width: float, height: float, dpi: int
) -> str:
    """Key of one preamble's plot on a global map: the map's id (it names the map's content),
    a hash of the preamble, format, size and renderer version."""
    digest = hashlib.sha256(preamble.encode()).hexdigest()[:16]
    return f"map.{map_id}.{digest}.r{RENDER_VERSION}.{fmt}.{width:g}x{height:g}@{dpi}"
