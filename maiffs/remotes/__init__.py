"""Remotes: places that hold a store's objects and snapshot refs, for push, pull and clone (design.md §6)."""
