"""The service's one SQLite database (WAL) in the state dir: its schema, and the one place
connections are opened.

Results (:mod:`service.results`), batch jobs (:mod:`service.job_store`) and global maps
(:mod:`service.map_store`) share the file, so a job's item is marked done only after its result
is stored, and the results a job lists are pinned against eviction by a query across both.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "connect"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS projections (
    key TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    coords BLOB NOT NULL,          -- float32 little-endian, (n, 2) row-major
    meta TEXT NOT NULL,            -- JSON: params_used, notes, metrics, extras, seconds
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY,          -- projection key + format + size
    media_type TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,            -- JSON: the validated request
    state TEXT NOT NULL,           -- queued | running | done | cancelled
    total INTEGER NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    preamble TEXT NOT NULL,
    projector TEXT NOT NULL,
    key TEXT,                      -- projection key once resolved; pins the result
    state TEXT NOT NULL,           -- pending | done | failed
    error TEXT,
    code TEXT,
    seconds REAL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS maps (
    id TEXT PRIMARY KEY,           -- content-addressed: dataset fingerprint + plan + versions
    spec TEXT NOT NULL,            -- JSON: dataset, its fingerprint, the request, the plan
    state TEXT NOT NULL,           -- queued | running | done | failed
    progress REAL NOT NULL,        -- 0..1, the whole map
    stage TEXT,                    -- prepare | fit | place | quality | done
    updates INTEGER NOT NULL,      -- changes of state or progress: the events' ids
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    code TEXT,
    summary TEXT,                  -- JSON (GlobalMap.summary()) once done
    n INTEGER,                     -- rows, once done
    coords BLOB                    -- float32 little-endian (n, 2), set with state 'done' only
);
CREATE INDEX IF NOT EXISTS job_items_key ON job_items(key);
CREATE INDEX IF NOT EXISTS projections_lru ON projections(last_used);
CREATE INDEX IF NOT EXISTS images_lru ON images(last_used);
"""


def connect(database: str | Path, **options: Any) -> sqlite3.Connection:
    """The one place the stores open SQLite connections (a test traces what runs on them:
    call it as ``database.connect``, never bound to a name of one's own)."""
    return sqlite3.connect(database, check_same_thread=False, **options)
