"""Level-2A processing: cloud masks and atmospheric correction."""
