"""smart-r1: SMART-R1 style traffic simulation toolkit (library part: knows nothing of Ray)."""
__version__ = "0.1.0"
