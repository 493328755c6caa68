"""Versioned snapshots: Merkle tree objects, snapshot records, views, retention (design.md §3-§4)."""
