"""Reading and shaping the atmaCup #11 layout. Modules that need torch import it themselves, so
`data.layout`, `data.config` and `data.io` stay importable from torch-free code (the stacking package)."""
