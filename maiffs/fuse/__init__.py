"""The thin pyfuse3 adapter: requests to namespace calls, errors to errno (design.md §2.3)."""
