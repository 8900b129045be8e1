"""Reading and shaping a dataroot: the atmaCup #11 layout as its competition spec (`data.competition`) asks, and
the MUGE retrieval layout. Modules that need torch import it themselves, so
`data.layout`, `data.config` and `data.io` stay importable from torch-free code (the stacking package)."""
